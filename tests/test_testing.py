"""The shared test/benchmark helpers: raypipe.testing's S3TestServer and benchmarks/harness.py,
and that the benchmarks import without doing anything."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from raypipe.testing import AWS_ENV_KEYS, S3ServerError, S3TestServer, free_port

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SENTINEL_ENDPOINT = "http://sentinel.invalid:1"


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket that ``pid`` or one of its children listens on."""
    import psutil

    root = psutil.Process(pid)
    out = set()
    for p in [root, *root.children(recursive=True)]:
        conns = p.net_connections("tcp") if hasattr(p, "net_connections") else p.connections("tcp")
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (where the server must not be reachable)."""
    import psutil

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def fail_fast_fs(server: S3TestServer):
    """An s3fs client that gives up at once when the server is down (no s3fs or botocore retries)."""
    fs = server.filesystem(config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 2})
    fs.retries = 1  # s3fs's own retry count (a class attribute, not a constructor argument)
    return fs


# --------------------------------------------------------------------------------------
# S3TestServer
# --------------------------------------------------------------------------------------


def test_s3_server_start_bind_serve_stop_restart_and_env(monkeypatch):
    from raypipe import storage

    # The environment the server's env must be restored to afterwards (including a shadowing
    # AWS_ENDPOINT_URL_S3, hidden while the server's env is in use, and a variable that is unset).
    monkeypatch.setenv("AWS_ENDPOINT_URL", SENTINEL_ENDPOINT)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", SENTINEL_ENDPOINT)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    before = {k: os.environ.get(k) for k in (*AWS_ENV_KEYS, "AWS_ENDPOINT_URL_S3")}

    server = S3TestServer()
    assert server.port != 5000 and server.endpoint == f"http://127.0.0.1:{server.port}"
    assert set(server.env) == set(AWS_ENV_KEYS) and server.env["AWS_ENDPOINT_URL"] == server.endpoint
    assert not server.running and server.pid is None
    with server:
        assert server.running
        port, first_pid = server.port, server.pid

        # Bound to 127.0.0.1 only: every listening socket of the server is on 127.0.0.1, and the
        # machine's other addresses refuse the port.
        listens = listening_addresses(first_pid)
        assert ("127.0.0.1", port) in listens
        assert {ip for ip, _ in listens} == {"127.0.0.1"}, listens
        assert accepts("127.0.0.1", port)
        for ip in other_addresses():
            assert not accepts(ip, port), f"the server is reachable on {ip}:{port}"

        # Serves a put/get through s3fs, and through raypipe.storage with the env in use.
        assert server.make_bucket("lifecycle") == "s3://lifecycle"
        fs = fail_fast_fs(server)
        fs.pipe("lifecycle/a.bin", b"first")
        assert fs.cat("lifecycle/a.bin") == b"first"
        with server.use_env() as env:
            assert env == server.env
            assert {k: os.environ[k] for k in AWS_ENV_KEYS} == server.env
            assert "AWS_ENDPOINT_URL_S3" not in os.environ  # would override AWS_ENDPOINT_URL
            storage.write_bytes("s3://lifecycle/b.bin", b"via raypipe.storage")
            assert storage.read_bytes("s3://lifecycle/b.bin") == b"via raypipe.storage"
            assert fs.cat("lifecycle/b.bin") == b"via raypipe.storage"
        assert {k: os.environ.get(k) for k in before} == before
        assert storage._fs_for_scheme.cache_info().currsize == 0  # no client left pointing at the server

        # stop(): the port is closed and reads fail.
        server.stop()
        assert not server.running and server.pid is None
        assert not accepts("127.0.0.1", port)
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            fail_fast_fs(server).cat("lifecycle/a.bin")
        assert "connect" in f"{type(info.value).__name__} {info.value}".lower(), info.value
        assert time.monotonic() - t0 < 30

        # restart() on the same port serves again. moto keeps everything in memory, so the
        # restarted server is empty: the bucket and objects written before the stop are gone.
        server.restart()
        assert server.running and server.port == port and server.pid != first_pid
        assert ("127.0.0.1", port) in listening_addresses(server.pid)
        fs = fail_fast_fs(server)
        assert not fs.exists("lifecycle")  # data lost on restart (in-memory server)
        server.make_bucket("lifecycle")
        fs.pipe("lifecycle/a.bin", b"second")
        assert fs.cat("lifecycle/a.bin") == b"second"

        server.restart(down_for=0.5)  # a short outage, same port
        assert accepts("127.0.0.1", port) and not fs.exists("lifecycle")
        last_pid = server.pid
    assert not server.running and not accepts("127.0.0.1", port)
    import psutil

    assert not psutil.pid_exists(last_pid) or psutil.Process(last_pid).status() == psutil.STATUS_ZOMBIE
    assert {k: os.environ.get(k) for k in before} == before


def test_s3_server_env_restored_when_block_raises(monkeypatch):
    from raypipe.testing import use_s3_env

    monkeypatch.setenv("AWS_ENDPOINT_URL", SENTINEL_ENDPOINT)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(KeyError):
        with use_s3_env("http://127.0.0.1:1"):
            assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
            raise KeyError("boom")
    assert os.environ["AWS_ENDPOINT_URL"] == SENTINEL_ENDPOINT
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ


def test_s3_server_refuses_mlflow_port_and_a_taken_port():
    with pytest.raises(ValueError, match="5000"):
        S3TestServer(port=5000)
    assert free_port() != 5000
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = S3TestServer(port=taken.getsockname()[1])
        with pytest.raises(S3ServerError, match="already taken"):
            server.start()
        assert not server.running


def test_s3_server_bounded_start_up_wait(tmp_path, monkeypatch):
    """A server that never listens: start() gives up after startup_timeout with a clear error and
    leaves no process behind; one that exits at once is reported with its output."""
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(hang.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(hang))
    server = S3TestServer(startup_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(S3ServerError, match="within 1 s"):
        server.start()
    assert time.monotonic() - t0 < 15 and not server.running

    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'No module named moto' >&2\nexit 3\n")
    crash.chmod(crash.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(crash))
    with pytest.raises(S3ServerError, match=r"(?s)status 3.*No module named moto"):
        S3TestServer(startup_timeout=10).start()


# --------------------------------------------------------------------------------------
# benchmarks/harness.py
# --------------------------------------------------------------------------------------


def load_bench(name: str, monkeypatch):
    """benchmarks/<name>.py as a module, with benchmarks/ on sys.path (as when run as a script)."""
    monkeypatch.syspath_prepend(str(BENCH))
    if name == "harness":
        import harness

        return harness
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeClock:
    """A clock that only moves when a fake method says it took some time."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeat_rotating_order_counts_and_medians(monkeypatch):
    harness = load_bench("harness", monkeypatch)
    clock = FakeClock()
    durations = {"a": [5.0, 1.0, 3.0, 2.0], "b": [10.0, 40.0, 20.0, 30.0], "c": [7.0, 7.0, 1.0, 100.0]}
    log: list[str] = []

    def method(name):
        taken = iter(durations[name])

        def call():
            log.append(name)
            clock.now += next(taken)
            return f"{name}{len([x for x in log if x == name])}"
        return call

    hooks: list[tuple] = []
    rot = harness.repeat_rotating({m: method(m) for m in "abc"}, 4, clock=clock,
                                  before=lambda r, m: hooks.append(("before", r, m)),
                                  after=lambda r, m, out, s: hooks.append(("after", r, m, out, s)))
    # Round r runs the methods rotated left by r; every method is called `rounds` times.
    assert log == list("abc" "bca" "cab" "abc")
    assert rot.calls == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                         (2, "c"), (2, "a"), (2, "b"), (3, "a"), (3, "b"), (3, "c")]
    assert rot.seconds == durations and rot.values == durations
    assert rot.results["a"] == ["a1", "a2", "a3", "a4"]
    # Hand-computed medians: a = (2 + 3) / 2, b = (20 + 30) / 2, c = (7 + 7) / 2.
    assert rot.medians == {"a": 2.5, "b": 25.0, "c": 7.0}
    assert [h[:3] for h in hooks[:4]] == [("before", 0, "a"), ("after", 0, "a"), ("before", 0, "b"), ("after", 0, "b")]
    assert hooks[-1] == ("after", 3, "c", "c4", 100.0)


def test_repeat_rotating_value_and_warmup(monkeypatch):
    harness = load_bench("harness", monkeypatch)
    clock = FakeClock()
    calls = {"fast": 0, "slow": 0}
    took = {"fast": [99.0, 1.0, 2.0, 4.0], "slow": [99.0, 4.0, 8.0, 5.0]}  # first: the untimed warm-up

    def method(name):
        def call():
            clock.now += took[name][calls[name]]
            calls[name] += 1
            return {"samples": 8}
        return call

    rot = harness.repeat_rotating({"fast": method("fast"), "slow": method("slow")}, 3, warmup=True, clock=clock,
                                  value=lambda out, s: out["samples"] / s)
    assert calls == {"fast": 4, "slow": 4}  # warm-up + 3 rounds
    assert rot.seconds == {"fast": [1.0, 2.0, 4.0], "slow": [4.0, 8.0, 5.0]}  # the warm-up is not timed
    # samples/s: fast 8, 4, 2 -> median 4; slow 2, 1, 1.6 -> median 1.6
    assert rot.medians == {"fast": 4.0, "slow": 1.6}
    assert [m for _, m in rot.calls] == ["fast", "slow", "slow", "fast", "fast", "slow"]
    took["once"] = [99.0, 3.0, 1.0, 2.0]
    calls["once"] = 0
    assert harness.median_seconds(method("once"), 3, warmup=True, clock=clock) == 2.0  # median of 3, 1, 2
    assert calls["once"] == 4
    with pytest.raises(ValueError):
        harness.repeat_rotating({"x": lambda: None}, 0)


def test_timer_and_emit(tmp_path, monkeypatch, capsys):
    import numpy as np

    harness = load_bench("harness", monkeypatch)
    clock = FakeClock()
    with harness.Timer(clock) as t:
        clock.now += 2.5
    assert t.seconds == 2.5
    def work(x):
        clock.now += x
        return "done"

    assert harness.timed(work, 1.5, clock=clock) == ("done", 1.5)

    results = {"rate": {"ray": np.float64(12.5), "bare": 8.0}, "rounds": np.array([1, 2]), "bad": math.nan,
               7: (1, 2)}
    data = harness.emit(results, tmp_path / "sub" / "r.json", text="THE TABLE")
    assert capsys.readouterr().out == "THE TABLE\n"
    on_disk = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert on_disk == data == {"rate": {"ray": 12.5, "bare": 8.0}, "rounds": [1, 2], "bad": None, "7": [1, 2]}
    harness.emit({"a": {"b": 1.23456}}, None)
    assert capsys.readouterr().out == "a.b: 1.235\n"
    info = harness.run_info()
    assert info["cpus"] == os.cpu_count() and isinstance(info["argv"], list)


# --------------------------------------------------------------------------------------
# The benchmarks: importable without side effects; private raypipe use isolated
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["harness", "data_throughput", "train_throughput", "cloud_detection",
                                  "filter_ood", "mtts_benchmark"])
def test_benchmark_imports_without_side_effects(name, monkeypatch, capsys):
    import psutil

    children = {p.pid for p in psutil.Process().children(recursive=True)}
    def own_env():  # (imported libraries such as rasterio set GDAL/PROJ variables of their own)
        return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "RAY", "MLFLOW"))}

    env = own_env()
    mod = load_bench(name, monkeypatch)
    assert capsys.readouterr() == ("", "")
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children  # nothing started
    assert own_env() == env
    if name != "harness":
        assert callable(mod.main)


def test_data_throughput_uses_no_private_raypipe_names_and_cloud_detection_fails_fast(monkeypatch):
    """The benchmark reaches raypipe through public names only (no ``raypipe.x._private``), and a
    missing benchmarks/cloud_detection.py is an immediate error, not a wait."""
    source = (BENCH / "data_throughput.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raypipe"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"line {node.lineno} imports private {private} from {node.module}"

    mod = load_bench("data_throughput", monkeypatch)
    assert ":func:`per_sample`" in mod.__doc__ and callable(mod.per_sample)
    monkeypatch.setitem(sys.modules, "cloud_detection", None)  # as if the file were missing
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match="cloud_detection.py"):
        mod.load_cloud_detection()
    assert time.monotonic() - t0 < 5
