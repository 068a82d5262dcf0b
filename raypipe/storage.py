"""URIs to filesystems: one code path for local folders, ``file://``, ``s3://`` and ``gs://``.

Endpoint and credentials come from the standard AWS environment and config files
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config`` …) through s3fs / botocore.
They are never printed or logged: :func:`redact` strips anything credential-like from a URI
before it goes into a message.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from typing import Iterable

import fsspec
import pyarrow.fs as pafs

from raypipe.errors import StorageError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme_of(uri: str) -> str:
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else "file"


def is_local(uri: str) -> bool:
    return scheme_of(uri) == "file"


def strip_scheme(uri: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key``; ``file:///x`` -> ``/x``; a plain path is made absolute."""
    m = _SCHEME.match(uri)
    if not m:
        return os.path.abspath(uri)
    rest = uri[m.end():]
    if m.group(1).lower() == "file":
        return "/" + rest.lstrip("/")
    return rest


def normalize(uri: str) -> str:
    """A canonical form: local paths become absolute plain paths, remote URIs keep their scheme."""
    uri = str(uri)
    if is_local(uri):
        return strip_scheme(uri)
    return uri.rstrip("/") if uri.count("/") > 3 else uri


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_local(base) and not base.startswith("file://"):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def redact(uri: str) -> str:
    """Remove user-info (``s3://KEY:SECRET@bucket``) and query strings from a URI for messages."""
    uri = re.sub(r"://[^/@]*@", "://", str(uri))
    return uri.split("?", 1)[0]


@functools.lru_cache(maxsize=16)
def _fs_for_scheme(scheme: str) -> fsspec.AbstractFileSystem:
    if scheme == "file":
        return fsspec.filesystem("file")
    if scheme in ("s3", "s3a"):
        kwargs = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        # Listing caches would make a freshly written manifest invisible to the next step.
        return fsspec.filesystem("s3", use_listings_cache=False, **kwargs)
    return fsspec.filesystem(scheme)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path to use with it."""
    scheme = scheme_of(uri)
    try:
        fs = _fs_for_scheme("s3" if scheme == "s3a" else scheme)
    except (ImportError, ValueError) as exc:
        raise StorageError(redact(uri), f"no filesystem for scheme '{scheme}': {exc}") from exc
    return fs, strip_scheme(uri)


def pyarrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for ``uri`` (used by Ray Data and Parquet I/O) and the scheme-less path."""
    scheme = scheme_of(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), strip_scheme(uri)
    fs, path = filesystem(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _wrap(uri: str, exc: BaseException, action: str) -> StorageError:
    return StorageError(redact(uri), f"cannot {action}: {type(exc).__name__}: {exc}")


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except Exception as exc:  # network, permissions, endpoint down
        raise _wrap(uri, exc, "read") from exc


def read_range(uri: str, start: int, end: int) -> bytes:
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path, start=start, end=end)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise _wrap(uri, exc, "read a byte range of") from exc


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    try:
        if is_local(uri):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)
    except Exception as exc:
        raise _wrap(uri, exc, "write") from exc


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.exists(path)
    except Exception as exc:
        raise _wrap(uri, exc, "check") from exc


def list_files(root: str, suffixes: Iterable[str] = ()) -> list[str]:
    """Every file under ``root`` (recursive), as URIs in the same form as ``root``, sorted."""
    fs, path = filesystem(root)
    suffixes = tuple(s.lower() for s in suffixes)
    try:
        if not fs.exists(path):
            raise StorageError(redact(root), "does not exist")
        found = fs.find(path)
    except StorageError:
        raise
    except Exception as exc:
        raise _wrap(root, exc, "list") from exc
    out = []
    for p in found:
        if suffixes and not p.lower().endswith(suffixes):
            continue
        out.append(_as_uri(root, p))
    return sorted(out)


def _as_uri(root: str, path: str) -> str:
    scheme = scheme_of(root)
    if scheme == "file":
        return path
    return f"{scheme}://{path}"


def check_reachable(uri: str) -> None:
    """Fail fast, naming the URI, when its storage cannot be reached (before any long run starts)."""
    fs, path = filesystem(uri)
    try:
        fs.info(path) if fs.exists(path) else fs.ls(posixpath.dirname(path.rstrip("/")) or path)
    except FileNotFoundError as exc:
        raise StorageError(redact(uri), "does not exist") from exc
    except Exception as exc:
        raise _wrap(uri, exc, "reach") from exc
