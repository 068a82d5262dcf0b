"""A real MLflow tracking server for tests and local use, bound to 127.0.0.1 by default.

    with MLflowTestServer(tmp / "mlflow.db", tmp / "artifacts") as server:
        client = mlflow.MlflowClient(server.uri)      # http://127.0.0.1:PORT
        ...

It runs ``python -m mlflow server --host 127.0.0.1 --port PORT --backend-store-uri sqlite:///…
--artifacts-destination … --workers 1`` as a subprocess (in its own session, so :meth:`stop` ends
the server and its uvicorn workers together) on a free port chosen once per instance and never
5000. The backend store URI is passed through ``MLFLOW_BACKEND_STORE_URI`` in the server's
environment, not on its command line, so a ``postgresql://user:password@…`` URI is not visible to
other users in ``ps``. ``allowed_hosts`` is MLflow's ``--allowed-hosts`` (Host headers accepted; by
default MLflow accepts localhost and private addresses).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from raypipe.testing.s3 import HOST, MLFLOW_DEFAULT_PORT, free_port

__all__ = ["MLflowServerError", "MLflowTestServer"]


class MLflowServerError(RuntimeError):
    """The MLflow server could not be started as asked."""


def _killpg(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class MLflowTestServer:
    """``mlflow server`` as a subprocess (see the module docstring).

    ``backend_store``: a path (a sqlite file, made ``sqlite:///PATH``) or any store URI.
    ``artifacts_destination``: a folder or an ``s3://`` URI (the server proxies artifacts: clients
    never need storage credentials). ``host`` defaults to 127.0.0.1; ``port`` to a free one.
    """

    def __init__(self, backend_store: str | os.PathLike, artifacts_destination: str | os.PathLike, *,
                 host: str = HOST, port: int | None = None, allowed_hosts: str | None = None,
                 startup_timeout: float = 300.0, env: dict[str, str] | None = None):
        if port == MLFLOW_DEFAULT_PORT:
            raise ValueError(f"port {MLFLOW_DEFAULT_PORT} is MLflow's default; use another")
        store = os.fspath(backend_store)
        self.backend_store_uri = store if "://" in store else f"sqlite:///{Path(store).resolve()}"
        dest = os.fspath(artifacts_destination)
        self.artifacts_destination = dest if "://" in dest else str(Path(dest).resolve())
        self.host, self.port = host, port or free_port()
        self.allowed_hosts = allowed_hosts
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._finalizer = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", self.host, "--port", str(self.port),
               "--artifacts-destination", self.artifacts_destination, "--workers", "1"]
        if self.allowed_hosts is not None:
            cmd += ["--allowed-hosts", self.allowed_hosts]
        return cmd

    def start(self) -> "MLflowTestServer":
        if self.pid is not None:
            return self
        # no background job runner (MLflow 3.x starts one by default): a test server does not need it
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.extra_env,
               "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri}
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._finalizer = weakref.finalize(self, _killpg, self._proc)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                self._fail(f"it exited with status {self._proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self._fail(f"it did not answer /health within {self.startup_timeout:.0f} s")
            time.sleep(0.5)

    def _fail(self, why: str) -> None:
        tail = ""
        if self._log is not None:
            self._log.seek(0)
            tail = self._log.read().decode(errors="replace")[-2000:]
        self.stop()
        raise MLflowServerError(f"cannot start the MLflow server on {self.uri}: {why}\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and its workers (SIGTERM to its process group, SIGKILL after ``timeout`` s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _killpg(proc)
                except ProcessLookupError:
                    pass
            try:  # workers left behind by a parent that died first
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "MLflowTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
