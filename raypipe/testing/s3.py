"""A real S3-compatible server for tests and benchmarks: moto in server mode on 127.0.0.1.

Clients reach it exactly as they would reach S3, through ``AWS_ENDPOINT_URL`` and the other
``AWS_*`` variables (``raypipe.storage``, s3fs, pyarrow, Ray workers given the same env)::

    with S3TestServer() as server, server.use_env():
        server.make_bucket("raypipe-test")
        ...  # s3://raypipe-test/... now works through raypipe.storage

The server runs as a subprocess (``python -m moto.server -H 127.0.0.1 -p PORT``) bound to
127.0.0.1 only, on a free port chosen once per instance and never 5000 (MLflow's default).
``stop()`` and ``start()`` (or ``restart()``) reuse that port, so clients configured with
``endpoint`` keep working across an outage. moto keeps everything in memory: **a stopped server
loses every bucket and object**; after a restart the buckets must be made again.

moto is a dev dependency (``pip install -e .[dev]``); it is only imported by the subprocess.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from typing import Iterator, Mapping

HOST = "127.0.0.1"
MLFLOW_DEFAULT_PORT = 5000
AWS_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
# Set elsewhere, this one would win over AWS_ENDPOINT_URL (botocore and raypipe.storage read it first).
_SHADOWING_KEYS = ("AWS_ENDPOINT_URL_S3",)


class S3ServerError(RuntimeError):
    """The moto S3 server could not be started (or stopped) as asked."""


def free_port(avoid: tuple[int, ...] = (MLFLOW_DEFAULT_PORT,)) -> int:
    """A TCP port free on 127.0.0.1 right now (the OS's choice), never one of ``avoid``."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def s3_env(endpoint: str, key: str = "testing", secret: str = "testing", region: str = "us-east-1") -> dict[str, str]:
    """The ``AWS_*`` variables that point S3 clients at ``endpoint`` (the keys of ``AWS_ENV_KEYS``)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": region}


def _clear_client_caches() -> None:
    """Forget S3 clients built under the previous environment (raypipe's per-scheme cache, s3fs's instances)."""
    from raypipe import storage

    storage._fs_for_scheme.cache_clear()
    s3fs = sys.modules.get("s3fs")  # only if already imported: importing it here would be wasted work
    if s3fs is not None:
        s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def use_s3_env(endpoint_or_env: str | Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Set the ``AWS_*`` variables for an endpoint (or a mapping from :func:`s3_env`) in ``os.environ``
    for the block, and restore the previous values afterwards (unset ones are unset again).

    ``AWS_ENDPOINT_URL_S3`` is unset for the block, since it would override ``AWS_ENDPOINT_URL``.
    ``raypipe.storage``'s filesystem cache (and s3fs's instance cache) is cleared on entry and on
    exit, so clients are rebuilt for the new settings both times. Yields the variables set.
    """
    env = s3_env(endpoint_or_env) if isinstance(endpoint_or_env, str) else dict(endpoint_or_env)
    keys = set(env) | set(_SHADOWING_KEYS)
    old = {k: os.environ.get(k) for k in keys}
    try:
        for k in _SHADOWING_KEYS:
            os.environ.pop(k, None)
        os.environ.update(env)
        _clear_client_caches()
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_client_caches()


def _accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` (or a child) listens on ``port``; None when psutil cannot tell."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            conns = p.net_connections("tcp") if hasattr(p, "net_connections") else p.connections("tcp")
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
                return True
        return False
    except psutil.AccessDenied:
        return None
    except psutil.Error:
        return False


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class S3TestServer:
    """moto's S3 server as a subprocess on 127.0.0.1 (see the module docstring).

    ``port``: the port to use (default: a free one, chosen now and kept for the instance's life).
    ``startup_timeout``: seconds :meth:`start` waits for the server to accept connections before
    raising :class:`S3ServerError` (moto's import takes a few seconds on a busy machine).
    """

    def __init__(self, port: int | None = None, *, startup_timeout: float = 60.0, key: str = "testing",
                 secret: str = "testing", region: str = "us-east-1"):
        if port == MLFLOW_DEFAULT_PORT:
            raise ValueError(f"port {MLFLOW_DEFAULT_PORT} is MLflow's default; use another")
        self.host = HOST
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.key, self.secret, self.region = key, secret, region
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._finalizer = None

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables for this server (``AWS_ENDPOINT_URL``, keys, region)."""
        return s3_env(self.endpoint, self.key, self.secret, self.region)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> "S3TestServer":
        """Start the server on ``port`` and wait (at most ``startup_timeout`` s) until it serves."""
        if self.running:
            return self
        if _accepts(self.port):
            raise S3ServerError(f"cannot start the moto S3 server: {self.endpoint} is already taken by another process")
        self._log = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        self._finalizer = weakref.finalize(self, _kill, self._proc)  # never outlive the interpreter
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._fail(f"it exited with status {code} before serving")
            if _accepts(self.port) and _listens(self._proc.pid, self.port) is not False:
                return self
            if time.monotonic() > deadline:
                self._fail(f"it did not accept connections within {self.startup_timeout:.0f} s")
            time.sleep(0.1)

    def _fail(self, why: str) -> None:
        tail = self._log_tail()
        self.stop()
        raise S3ServerError(f"the moto S3 server ({' '.join(self._proc_args())}) did not start: {why}"
                            + (f"; its last output:\n{tail}" if tail else "")
                            + "\n(is moto[server] installed? pip install -e .[dev])")

    def _proc_args(self) -> list[str]:
        return ["python", "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - limit))
            return self._log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (terminate, then kill after ``timeout`` s) and wait until its port is closed.
        Everything it stored is lost (moto is in memory). A no-op when not running."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            deadline = time.monotonic() + timeout
            while _accepts(self.port, timeout=0.2) and time.monotonic() < deadline:
                time.sleep(0.05)  # a child still holding the socket
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, down_for: float = 0.0) -> "S3TestServer":
        """Stop, stay down ``down_for`` s, start again on the same port. The new server is empty:
        buckets and objects of the old one are gone (moto is in memory)."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        return self.start()

    def __enter__(self) -> "S3TestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients ------------------------------------------------------------------------------------

    def use_env(self):
        """Context manager: this server's ``env`` in ``os.environ`` for the block, restored after
        (see :func:`use_s3_env`; raypipe.storage's filesystem cache is cleared both times)."""
        return use_s3_env(self.env)

    def filesystem(self, **kwargs):
        """A fresh s3fs filesystem for this server (explicit endpoint and keys; ignores os.environ).
        ``kwargs`` go to ``s3fs.S3FileSystem`` (e.g. ``config_kwargs={"retries": {"max_attempts": 1}}``)."""
        import s3fs

        opts = {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret,
                "skip_instance_cache": True, "use_listings_cache": False, **kwargs}
        return s3fs.S3FileSystem(**opts)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no-op if it exists); returns ``s3://name``."""
        fs = self.filesystem()
        if not fs.exists(name):
            # us-east-1 is S3's default location, which S3 (and moto) reject as an explicit constraint.
            fs.mkdir(name, region_name=None if self.region == "us-east-1" else self.region)
        return f"s3://{name}"
