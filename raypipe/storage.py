"""URIs to filesystems: one code path for local folders, ``file://``, ``s3://`` and ``gs://``.

Endpoint and credentials come from the standard AWS environment and config files
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config`` …) through s3fs / botocore.
They are never printed or logged: :func:`redact` strips anything credential-like from a URI
before it goes into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import logging
import os
import posixpath
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import fsspec
import pyarrow.fs as pafs

from raypipe.errors import RaypipeError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

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


# --- bounded retries of reads -------------------------------------------------------------------
#
# An object store that stops answering for a few seconds (a restart, a network blip, a throttling
# burst) must not fail a multi-hour job, nor turn good tiles into "corrupt" quarantines. Reads go
# through :func:`call_with_retries`: transient errors (connection refused/reset/closed, timeouts,
# truncated transfers, 5xx/SlowDown) are retried with exponential backoff, a bounded number of
# times; anything else (missing file, access denied, a tile that does not decode) is not retried.
# When the outage outlasts the retries a :class:`StorageError` names the URI, the endpoint and
# what was being read. botocore has its own retries inside each attempt (``AWS_MAX_ATTEMPTS``,
# ``AWS_RETRY_MODE``; legacy mode: about 4 s of retrying a refused connection); these come on top.


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (1 = no retry); the n-th retry waits ``backoff_s * 2**(n-1)``
    seconds, at most ``max_backoff_s``."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def delay(self, retry: int) -> float:
        return min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)

    @property
    def budget_s(self) -> float:
        """Seconds spent waiting between attempts before giving up (not counting the attempts)."""
        return sum(self.delay(i) for i in range(1, self.attempts))


DEFAULT_RETRY = RetryPolicy()
_policy: contextvars.ContextVar[RetryPolicy | None] = contextvars.ContextVar("raypipe_retry_policy", default=None)
_events: contextvars.ContextVar[list | None] = contextvars.ContextVar("raypipe_retry_events", default=None)
_stats_lock = threading.Lock()
_stats = {"retries": 0, "reads_retried": 0, "reads_recovered": 0, "reads_failed": 0}


@contextlib.contextmanager
def retry_policy(policy: RetryPolicy | None, events: list | None = None):
    """Reads in this block (this thread / task) use ``policy``; each retry is appended to ``events``
    (``{"uri", "action", "attempt", "error", "wait_s"}``) when a list is given."""
    t1, t2 = _policy.set(policy), _events.set(events)
    try:
        yield
    finally:
        _events.reset(t2)
        _policy.reset(t1)


def current_retry_policy() -> RetryPolicy:
    return _policy.get() or DEFAULT_RETRY


def retry_stats() -> dict[str, int]:
    """This process's counters: ``retries`` (retry waits), ``reads_retried`` (reads that needed at
    least one), ``reads_recovered`` (of those, the ones that then succeeded), ``reads_failed``
    (reads given up after the last attempt)."""
    with _stats_lock:
        return dict(_stats)


def reset_retry_stats() -> None:
    with _stats_lock:
        for k in _stats:
            _stats[k] = 0


def _count(**inc: int) -> None:
    with _stats_lock:
        for k, v in inc.items():
            _stats[k] += v


_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET, errno.EAGAIN}
_TRANSIENT_TEXT = re.compile(r"SlowDown|reduce your request rate|ServiceUnavailable|Service Unavailable|"
                             r"InternalError|RequestTimeout|Connection (?:reset|refused|aborted)|"
                             r"Could not connect to the endpoint|Connection was closed", re.I)


def _transient_types() -> tuple[type, ...]:
    types: list[type] = [ConnectionError, TimeoutError, asyncio.TimeoutError]
    try:
        import botocore.exceptions as be

        types += [be.ConnectionError, be.HTTPClientError]  # EndpointConnectionError, ConnectionClosed, timeouts
        if hasattr(be, "ResponseStreamingError"):
            types.append(be.ResponseStreamingError)
        if hasattr(be, "IncompleteReadError"):
            types.append(be.IncompleteReadError)
    except ImportError:
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    except ImportError:
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        types.append(FSTimeoutError)
    except ImportError:
        pass
    import http.client

    types.append(http.client.IncompleteRead)
    return tuple(types)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its cause chain) says the store was unreachable or
    overloaded, as opposed to the object being missing, forbidden or bad. Missing files and
    access denied are never transient."""
    types = _transient_types()
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(e, types):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        if isinstance(e, OSError) and not isinstance(e, RaypipeError) and _TRANSIENT_TEXT.search(str(e)):
            return True  # s3fs turns botocore ClientErrors (503 SlowDown, 500 InternalError) into OSError
        todo += [e.__cause__, e.__context__]
    return False


def endpoint_of(uri: str) -> str:
    """The storage endpoint a URI is read from, for messages (never with credentials)."""
    scheme = scheme_of(uri)
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return redact(endpoint) if endpoint else "AWS S3 (default endpoint)"
    if scheme == "file":
        return "local filesystem"
    return f"{scheme}:// (default endpoint)"


def call_with_retries(uri: str, action: str, fn: Callable[[], T], policy: RetryPolicy | None = None) -> T:
    """``fn()``, retried on transient storage errors (see :func:`is_transient`) under ``policy``
    (default: the block's :func:`retry_policy`, else :data:`DEFAULT_RETRY`).

    ``FileNotFoundError`` and raypipe errors (a :class:`~raypipe.errors.BadTileError` from
    decoding, a :class:`StorageError` from a nested read) pass through untouched; other
    non-transient errors become a :class:`StorageError`. When the last attempt fails the
    :class:`StorageError` names the URI, the endpoint, what was being done and for how long."""
    policy = policy or current_retry_policy()
    events = _events.get()
    t0 = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            result = fn()
        except (FileNotFoundError, RaypipeError):
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise _wrap(uri, exc, action) from exc
            if attempt >= policy.attempts:
                _count(reads_failed=1)
                elapsed = time.monotonic() - t0
                log.error("storage: giving up on %s of %s (endpoint %s) after %d attempt(s) over %.1f s: %s: %s",
                          action, redact(uri), endpoint_of(uri), attempt, elapsed, type(exc).__name__, exc)
                raise StorageError(redact(uri), f"cannot {action}: the storage endpoint {endpoint_of(uri)} did not "
                                   f"answer after {attempt} attempt(s) over {elapsed:.1f} s "
                                   f"(data.pipeline.retries.attempts={policy.attempts}; the store is unreachable, "
                                   f"the tile was not judged bad): {type(exc).__name__}: {exc}") from exc
            wait = policy.delay(attempt)
            _count(retries=1, reads_retried=1 if attempt == 1 else 0)
            log.warning("storage: %s of %s failed (attempt %d/%d, endpoint %s: %s); retrying in %.2f s",
                        action, redact(uri), attempt, policy.attempts, endpoint_of(uri), type(exc).__name__, wait)
            if events is not None:
                events.append({"uri": redact(uri), "action": action, "attempt": attempt,
                               "error": f"{type(exc).__name__}: {exc}"[:300], "wait_s": wait})
            time.sleep(wait)
        else:
            if attempt > 1:
                _count(reads_recovered=1)
                log.info("storage: %s of %s succeeded at attempt %d after %.1f s", action, redact(uri), attempt,
                         time.monotonic() - t0)
            return result
    raise AssertionError("unreachable")  # pragma: no cover


def read_bytes(uri: str) -> bytes:
    """The whole object; transient errors are retried (:func:`call_with_retries`)."""
    fs, path = filesystem(uri)

    def once() -> bytes:
        with fs.open(path, "rb") as f:
            return f.read()

    return call_with_retries(uri, "read", once)


def read_range(uri: str, start: int, end: int) -> bytes:
    fs, path = filesystem(uri)
    return call_with_retries(uri, "read a byte range of", lambda: fs.cat_file(path, start=start, end=end))


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
