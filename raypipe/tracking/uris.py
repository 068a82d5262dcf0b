"""Tracking-URI policy: which MLflow store a (possibly relative) tracking URI means.

The driver and the Ray workers run in different working directories, so every URI is made
absolute here once (:func:`resolve_tracking_uri`) and passed on as a string.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from raypipe.errors import ConfigError

__all__ = ["resolve_tracking_uri"]

_PASS_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc", "postgresql", "mysql",
                 "mssql")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _looks_like_file_store(path: Path) -> bool:
    if path.name == "mlruns":
        return True
    try:
        return any(p.is_dir() and p.name.isdigit() and (p / "meta.yaml").exists() for p in path.iterdir())
    except OSError:
        return False


def resolve_tracking_uri(uri: str | os.PathLike | None, field: str = "tracking.uri") -> str:
    """An absolute tracking URI that the driver and Ray workers (started in another working
    directory) resolve to the same store.

    * ``None`` / ``""``: ``$MLFLOW_TRACKING_URI`` if set (resolved by these rules), else
      ``sqlite:///<cwd>/mlflow.db`` (MLflow 3's default store, made absolute).
    * ``http(s)://``, ``databricks``, ``postgresql://`` ...: unchanged.
    * ``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; ``sqlite:////abs.db`` unchanged;
      in-memory sqlite is refused (workers could not see it).
    * ``file:rel`` / ``file:///abs``: an absolute ``file://`` URI (MLflow's file store).
    * a plain path ending ``.db``/``.sqlite``/``.sqlite3``: that sqlite file; a folder named
      ``mlruns`` or holding file-store data (``<id>/meta.yaml``): file store; any other folder
      (existing or not): ``sqlite:///<folder>/mlflow.db``.
    """
    if uri is None or str(uri).strip() == "":
        env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if env:
            return resolve_tracking_uri(env, field)
        return "sqlite:///" + os.path.abspath("mlflow.db")
    uri = os.fspath(uri).strip()
    low = uri.lower()
    if low.split("://", 1)[0].split(":", 1)[0] in ("databricks", "databricks-uc", "uc"):
        return uri  # "databricks", "databricks://profile", "databricks-uc"
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", uri)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else None  # 'C:' is a drive, not a scheme
    if scheme is None:
        path = Path(os.path.abspath(os.path.expanduser(uri)))
        if path.suffix.lower() in _SQLITE_SUFFIXES:
            return "sqlite:///" + str(path)
        if path.is_file():
            raise ConfigError(field, f"{uri} is a file but not a sqlite database (.db/.sqlite)")
        if _looks_like_file_store(path):
            return path.as_uri()
        return "sqlite:///" + str(path / "mlflow.db")
    if scheme == "sqlite":
        if not low.startswith("sqlite:///"):
            raise ConfigError(field, f"{uri!r}: use sqlite:///<path to a file>; an in-memory store "
                                     "cannot be shared with Ray workers")
        rest = uri[len("sqlite:///"):]
        path, sep, query = rest.partition("?")
        if path in ("", ":memory:"):
            raise ConfigError(field, f"{uri!r}: an in-memory sqlite store cannot be shared with Ray workers")
        path = unquote(path)
        return "sqlite:///" + os.path.abspath(os.path.expanduser(path)) + (sep + query if sep else "")
    if scheme == "file":
        rest = uri[len("file:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):  # file://host/path: keep as given
                return uri
        return Path(os.path.abspath(os.path.expanduser(unquote(rest)))).as_uri()
    return uri  # http(s), databricks, postgresql, mysql, ... : already location-independent
