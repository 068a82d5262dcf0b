"""Shared test infrastructure: a real S3-compatible server (moto, server mode) on 127.0.0.1, one
local Ray instance per session, and the location of the real tiles in ../shared/data/real.

Everything is started and stopped here; nothing is left running after the session.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("RAYPIPE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port != 5000 else free_port()  # 5000 is MLflow's default


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real tiles not found at {REAL_DATA} (set RAYPIPE_REAL_DATA); CI requires them")
    return REAL_DATA


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 reached through s3fs exactly as S3 would be (AWS_* env vars set
    for the session, restored after); bucket "raypipe-test" exists. Yields the endpoint URL."""
    from raypipe.testing import S3TestServer

    with S3TestServer() as server, server.use_env():
        server.make_bucket("raypipe-test")
        yield server.endpoint


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One local Ray instance for the session (started after the S3 env is set, so workers see it)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # as jobs/run.py's local start
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in
                                       ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                        "AWS_DEFAULT_REGION")}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def upload_tree(local: Path, s3_uri: str) -> None:
    """Copy a local folder to s3://bucket/prefix through s3fs."""
    from raypipe import storage

    for path in sorted(local.rglob("*")):
        if path.is_file():
            storage.write_bytes(storage.join(s3_uri, path.relative_to(local).as_posix()), path.read_bytes())
