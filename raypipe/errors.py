"""Typed errors. Each one says what went wrong, where (a URI or a config field), and what to do."""

from __future__ import annotations


class RaypipeError(Exception):
    """Base class of every error raypipe raises on purpose."""


class ConfigError(RaypipeError, ValueError):
    """A configuration value is unknown, missing or out of range. ``field`` names it (dotted path)."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"config field '{field}': {problem}")

    def __reduce__(self):  # survive pickling and copying across Ray workers (Tune copies a trial's error)
        return (type(self), (self.field, self.problem))


class StorageError(RaypipeError, OSError):
    """Object storage (or a local folder used as one) cannot be reached or listed."""

    def __init__(self, uri: str, problem: str):
        self.uri = uri
        self.problem = problem
        super().__init__(f"{uri}: {problem}")

    def __reduce__(self):  # survive pickling across Ray workers (OSError would rebuild it from args)
        return (StorageError, (self.uri, self.problem))


class DatasetNotFoundError(RaypipeError, FileNotFoundError):
    """A dataset root holds no sample in the expected official layout."""

    def __init__(self, uri: str, problem: str):
        self.uri = uri
        self.problem = problem
        super().__init__(f"{uri}: {problem}")

    def __reduce__(self):
        return (DatasetNotFoundError, (self.uri, self.problem))


class BadTileError(RaypipeError, ValueError):
    """A tile cannot be used: missing, corrupt, truncated, wrong band count/dtype/size, NaN or nodata.

    ``uri`` is the file, ``reason`` a short machine-readable kind (``missing``, ``corrupt``,
    ``band_count``, ``dtype``, ``size``, ``nan``, ``nodata``), ``detail`` the human explanation.
    """

    def __init__(self, uri: str, reason: str, detail: str):
        self.uri = uri
        self.reason = reason
        self.detail = detail
        super().__init__(f"bad tile {uri} [{reason}]: {detail}")

    def __reduce__(self):  # survive pickling across Ray workers
        return (BadTileError, (self.uri, self.reason, self.detail))


class ManifestError(RaypipeError, ValueError):
    """A manifest file is missing columns or holds inconsistent rows."""

    def __init__(self, uri: str, problem: str):
        self.uri = uri
        self.problem = problem
        super().__init__(f"manifest {uri}: {problem}")

    def __reduce__(self):
        return (ManifestError, (self.uri, self.problem))
