"""Surviving storage faults (issue "Surviving faults", items c, d, e).

(c) the object store stops answering while tiles stream: bounded retries with backoff finish the
    pass with no sample lost, or, when the outage outlasts them, a StorageError names the file and
    the endpoint; an unreachable store is never quarantined as a "corrupt" tile.
(d) a stage that would be reused from MLflow has a truncated/corrupt ``state.pt``: CheckpointError
    naming the run and the file, no silent retrain; a truncated Ray Train checkpoint on resume:
    an error naming the checkpoint file.
(e) the disk fills up while a checkpoint is written: an error naming the path and "no space
    left", and the previous checkpoint still loads with the same weights.

The outage is a TCP proxy in front of moto (closing it drops every connection and refuses new
ones, and moto keeps its data: a restarted moto would come back empty). botocore's own retries
are turned off here (``AWS_MAX_ATTEMPTS=1``) so that raypipe's retries are what is measured.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data.sen12ms import lc_tile, s1_tile, s2_tile
from raypipe import raster, storage
from raypipe.config import from_dict
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.data.prepare import prepare
from raypipe.errors import BadTileError, ConfigError, StorageError
from raypipe.testing import S3TestServer, use_s3_env

BUCKET = "raypipe-faults"
N_TILES = 24
ROI = "ROIs1158_spring"


# --- a TCP proxy that can be cut --------------------------------------------------------------


class TcpProxy:
    """127.0.0.1 relay to ``target_port``. ``down()`` closes the listener and every open connection
    (clients see refused / reset connections, as with a store that went away); ``up()`` listens again
    on the same port."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host, self.target = host, target_port
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = s.getsockname()[1]
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def up(self) -> "TcpProxy":
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def down(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not ls:
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns -= {a, b}


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(ray_session):
    """moto behind a cuttable proxy; the AWS env points at the proxy for the module. Yields
    (proxy, manifest URI, {sample ids})."""
    with S3TestServer() as server:
        server.make_bucket(BUCKET)
        proxy = TcpProxy(server.port).up()
        env = {**server.env, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "1"}
        old = os.environ.get("AWS_MAX_ATTEMPTS")
        with use_s3_env(env):
            try:
                root = f"s3://{BUCKET}/sen12ms"
                rng = np.random.default_rng(0)
                ids = set()
                for i in range(N_TILES):
                    scene, patch = (1, 100 + i) if i % 2 else (15, 200 + i)
                    for mod, arr in (("s1", s1_tile(rng, 16)), ("s2", s2_tile(rng, 16)), ("lc", lc_tile(1 + i % 5, 16))):
                        raster.write_geotiff(f"{root}/{ROI}/{mod}_{scene}/{ROI}_{mod}_{scene}_p{patch}.tif", arr,
                                             crs="EPSG:32633")
                    ids.add(f"{ROI}_{scene}_p{patch}")
                manifest = f"s3://{BUCKET}/sen12ms.parquet"
                prepare("sen12ms", root, manifest)
                yield proxy, manifest, ids
            finally:
                proxy.down()
                if old is None:
                    os.environ.pop("AWS_MAX_ATTEMPTS", None)
                else:
                    os.environ["AWS_MAX_ATTEMPTS"] = old


def pipeline(manifest: str, **cfg) -> TilePipeline:
    return TilePipeline(from_dict(DataConfig, {"manifest": manifest, "optical": "clear", "read_threads": 2,
                                               **cfg}, "data"))


def stream_in_thread(pipe: TilePipeline, block: int, cut_after: int, cut: threading.Event, resume: threading.Event):
    """Read the manifest block by block (``decode_rows``, what each Ray Data task runs) in a thread;
    after ``cut_after`` blocks, signal ``cut`` and wait for ``resume`` (the outage has started)."""
    out = {"ids": [], "error": None, "block_s": []}

    def work():
        try:
            rows = pipe.frame.to_dict("records")
            for i in range(0, len(rows), block):
                if i // block == cut_after:
                    cut.set()
                    resume.wait(30)
                t = time.perf_counter()
                batch = pipe.read_rows(rows[i:i + block])
                out["block_s"].append(time.perf_counter() - t)
                out["ids"] += list(batch["sample_id"])
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, out


# --- (c) object-store outage -------------------------------------------------------------------


def test_short_outage_is_retried_and_no_sample_is_lost(store):
    proxy, manifest, ids = store
    pipe = pipeline(manifest, on_bad_tile="skip", retries={"attempts": 6, "backoff_s": 0.25, "max_backoff_s": 2.0})
    storage.reset_retry_stats()
    cut, resume = threading.Event(), threading.Event()
    thread, out = stream_in_thread(pipe, block=4, cut_after=2, cut=cut, resume=resume)
    assert cut.wait(60), out["error"]
    proxy.down()
    t_down = time.perf_counter()
    resume.set()  # the reader goes on into the outage
    time.sleep(3.0)
    proxy.up()
    outage_s = time.perf_counter() - t_down
    thread.join(120)
    assert not thread.is_alive()
    assert out["error"] is None, out["error"]
    # every sample of the manifest delivered once: none lost, none duplicated, none quarantined
    assert sorted(out["ids"]) == sorted(ids) and len(out["ids"]) == N_TILES
    rep = pipe.report(len(out["ids"]))
    assert rep["accounted"] and rep["samples_in"] == N_TILES and rep["samples_quarantined"] == 0
    # the retries are counted and say which files were retried
    stats = storage.retry_stats()
    assert stats["retries"] >= 2 and stats["reads_recovered"] >= 1 and stats["reads_failed"] == 0
    retries = pipe.read_retries()
    assert rep["read_retries"] == len(retries) == stats["retries"] and rep["reads_retried"] >= 1
    assert all(e["uri"].startswith(f"s3://{BUCKET}/sen12ms/") and e["uri"].endswith(".tif") for e in retries)
    assert max(e["attempt"] for e in retries) >= 2  # the outage outlasted the first backoff: backoff doubled
    # time lost: the block read across the outage took about the outage, not the whole retry budget
    lost = max(out["block_s"]) - min(out["block_s"])
    print(f"\n[storage-faults] short outage {outage_s:.1f} s: {stats['retries']} retries, "
          f"{stats['reads_retried']} reads retried, {stats['reads_recovered']} recovered, "
          f"slowest block {max(out['block_s']):.2f} s (others {min(out['block_s']):.2f} s), "
          f"time lost ~{lost:.1f} s, samples lost 0 of {N_TILES}")
    # at least the outage (the reads did hit it), at most the outage + one max backoff (2 s) + slack
    # for a loaded 2-core CI machine: nobody waited out the rest of the retry budget
    assert outage_s - 0.5 <= lost <= outage_s + 2.0 + 4.0, (lost, out["block_s"])


def test_long_outage_fails_naming_file_and_endpoint_and_quarantines_nothing(store):
    proxy, manifest, ids = store
    pipe = pipeline(manifest, on_bad_tile="skip", retries={"attempts": 2, "backoff_s": 0.2})
    storage.reset_retry_stats()
    proxy.down()
    try:
        t0 = time.perf_counter()
        with pytest.raises(StorageError) as e:
            pipe.read_rows(pipe.frame.iloc[:4])
        failed_after = time.perf_counter() - t0
    finally:
        proxy.up()
    err = e.value
    assert not isinstance(err, BadTileError)
    msg = str(err)
    assert err.uri.startswith(f"s3://{BUCKET}/sen12ms/{ROI}/") and err.uri.endswith(".tif") and err.uri in msg
    assert proxy.endpoint in msg and "cannot read" in msg and "2 attempt(s)" in msg
    assert "testing" not in msg.replace(BUCKET, "")  # no credentials in the message
    # an unreachable store is not a bad tile: nothing quarantined, nothing counted as used
    assert pipe.quarantined() == []
    assert storage.retry_stats()["reads_failed"] >= 1
    print(f"\n[storage-faults] long outage, attempts=2 backoff 0.2 s: StorageError after {failed_after:.2f} s: {msg[:160]}")
    assert failed_after < 10
    # the store is back: the same pipeline reads everything
    assert sorted(pipe.read_rows()["sample_id"]) == sorted(ids)


def test_window_reads_retry_an_outage_instead_of_quarantining_corrupt(store):
    proxy, _, _ = store
    uri = f"s3://{BUCKET}/big.tif"
    big = np.arange(2 * 600 * 600, dtype=np.float32).reshape(2, 600, 600)
    raster.write_geotiff(uri, big)
    expect = raster.Expect(bands=2)
    # outage longer than the retries: StorageError naming the file, not BadTileError('corrupt')
    proxy.down()
    try:
        with storage.retry_policy(storage.RetryPolicy(attempts=2, backoff_s=0.1)):
            with pytest.raises(StorageError) as e:
                raster.read_window(uri, 300, 300, 16, 16, expect)
            with pytest.raises(StorageError):
                raster.read_profile(uri)
    finally:
        proxy.up()
    assert not isinstance(e.value, BadTileError) and e.value.uri == uri and "window" in str(e.value)
    # short outage: retried, the right pixels come back
    proxy.down()
    timer = threading.Timer(1.0, proxy.up)
    timer.start()
    with storage.retry_policy(storage.RetryPolicy(attempts=6, backoff_s=0.25)):
        arr = raster.read_window(uri, 300, 300, 16, 16, expect)
    timer.join()
    np.testing.assert_array_equal(arr, big[:, 300:316, 300:316])
    # a really corrupt file is still a bad tile, and is not retried
    storage.write_bytes(f"s3://{BUCKET}/junk.tif", b"II*\x00" + os.urandom(3000))
    storage.reset_retry_stats()
    with pytest.raises(BadTileError) as bad:
        raster.read_window(f"s3://{BUCKET}/junk.tif", 0, 0, 16, 16, expect)
    assert bad.value.reason == "corrupt" and storage.retry_stats()["retries"] == 0


def test_transient_classification():
    import botocore.exceptions as be

    assert storage.is_transient(be.EndpointConnectionError(endpoint_url="http://x"))
    assert storage.is_transient(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert storage.is_transient(OSError("An error occurred (SlowDown) when calling GetObject"))
    wrapped = RuntimeError("opener failed")
    wrapped.__cause__ = be.ReadTimeoutError(endpoint_url="http://x")
    assert storage.is_transient(wrapped)
    for exc in (FileNotFoundError("s3://b/k"), PermissionError("AccessDenied"), ValueError("bad"),
                BadTileError("u", "corrupt", "x"), OSError(errno.ENOSPC, "No space left on device")):
        assert not storage.is_transient(exc), exc
    # missing files are not retried and keep their meaning (a 'missing' bad tile upstream)
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        storage.call_with_retries("s3://b/k.tif", "read", missing, storage.RetryPolicy(attempts=5, backoff_s=0))
    assert len(calls) == 1
    assert storage.RetryPolicy(5, 0.5, 8.0).budget_s == 0.5 + 1 + 2 + 4


def test_retry_config_is_validated_naming_the_field():
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"retries": {"attempts": 0}}, "data.pipeline")
    assert e.value.field == "data.pipeline.retries.attempts"
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"retries": {"backoff_s": 2.0, "max_backoff_s": 1.0}}, "data.pipeline")
    assert e.value.field == "data.pipeline.retries.max_backoff_s"
    assert DataConfig().retries.policy() == storage.RetryPolicy(5, 0.5, 8.0)


def test_storage_error_survives_pickling():
    import pickle

    back = pickle.loads(pickle.dumps(StorageError("s3://b/k.tif", "cannot read: down")))
    assert (back.uri, back.problem) == ("s3://b/k.tif", "cannot read: down")


# --- (d) a corrupt checkpoint where a stage would be reused, or resumed ---------------------------

TINY_MODEL = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}


def tiny_source_only(tmp: Path, **extra) -> dict:
    return {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
            "stages": {"source": {"model": dict(TINY_MODEL), "train": {"epochs": 1, "batch_size": 16,
                                                                       "max_failures": 0}}},
            "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db", "experiment": "test-storage-faults"},
            "ray": {"storage_path": str(tmp / "runs")}, **extra}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_session):
    from raypipe.engine import resolve
    from raypipe.engine.run import run_method
    from raypipe.methods import get_method

    method = get_method("source_only")
    tmp = tmp_path_factory.mktemp("faults-engine")
    t0 = time.perf_counter()
    result = run_method(method, resolve(method, extra=tiny_source_only(tmp)))
    return tmp, method, result, time.perf_counter() - t0


def _stage_runs(tmp: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("test-storage-faults")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`raypipe.kind` != 'pipeline'")
    return sorted((r.info.run_id, r.data.tags.get("raypipe.kind"), r.info.status) for r in runs)


def _artifact_file(tmp: Path, run_id: str, rel: str) -> Path:
    import mlflow
    from urllib.parse import urlparse

    uri = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db").get_run(run_id).info.artifact_uri
    root = urlparse(uri).path if uri.startswith("file:") else uri
    path = Path(root) / rel
    assert path.is_file(), path
    return path


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_reused_stage_with_corrupt_checkpoint_fails_naming_run_and_file(trained, damage):
    from raypipe.engine import resolve
    from raypipe.engine.run import run_method
    from raypipe.tracking import CheckpointError

    tmp, method, first, _ = trained
    run_id = first.stages["source"].run_id
    state = _artifact_file(tmp, run_id, "model/state.pt")
    good = state.read_bytes()
    before = _stage_runs(tmp)
    ray_runs = sorted(p.name for p in (tmp / "runs").iterdir())
    state.write_bytes(good[: len(good) // 2] if damage == "truncate" else os.urandom(len(good)))
    try:
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError) as e:
            run_method(method, resolve(method, extra=tiny_source_only(tmp)))
        failed_after = time.perf_counter() - t0
    finally:
        state.write_bytes(good)
    err = e.value
    assert err.run_id == run_id and err.file == "model/state.pt"
    assert run_id in str(err) and "model/state.pt" in str(err) and "stages.source" in str(err)
    # nothing retrained silently: no new stage run, no reuse marker, no new Ray Train run
    assert _stage_runs(tmp) == before
    assert sorted(p.name for p in (tmp / "runs").iterdir()) == ray_runs
    print(f"\n[storage-faults] reused stage, {damage}d state.pt: CheckpointError after {failed_after:.1f} s: {err}")
    # the file restored, the same config reuses the run again
    again = run_method(method, resolve(method, extra=tiny_source_only(tmp)))
    assert again.stages["source"].reused and again.stages["source"].run_id == run_id


def test_truncated_ray_train_checkpoint_on_resume_names_the_file(trained):
    """A stage run that failed mid-stage is continued by the rerun, which resumes its Ray Train run
    from the latest checkpoint; that checkpoint truncated gives raypipe's CheckpointError naming the
    file (unwrapped from Ray Train's WorkerGroupError), never a silent restart from epoch 0."""
    from raypipe.engine import resolve
    from raypipe.engine.run import run_method
    from raypipe.tracking import CheckpointError

    tmp, method, _, _ = trained
    extra = tiny_source_only(tmp)
    extra["stages"]["source"]["train"].update(epochs=2, fail_once_at_epoch=1, max_failures=0)
    before = _stage_runs(tmp)
    with pytest.raises(Exception):  # the injected worker death in epoch 1, after epoch 0's checkpoint
        run_method(method, resolve(method, extra=extra))
    new = [r for r in _stage_runs(tmp) if r not in before]
    assert [(kind, status) for _, kind, status in new] == [("stage", "FAILED")], new
    run_id = new[0][0]
    run_dirs = [p for p in (tmp / "runs").glob(f"source_only-source-*-{run_id[:8]}") if p.is_dir()]
    assert len(run_dirs) == 1, sorted(p.name for p in (tmp / "runs").iterdir())
    states = sorted(p / "state.pt" for p in run_dirs[0].glob("checkpoint_*") if p.is_dir())
    assert states, sorted(p.name for p in run_dirs[0].iterdir())
    for p in states:  # whichever Ray Train resumes from is truncated
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as e:  # the rerun continues the failed run, so it resumes
        run_method(method, resolve(method, extra=extra))
    err = e.value
    assert err.file in {f"{p}" for p in states} and "cannot be loaded" in str(err) and "truncated" in str(err)
    assert err.field == "ray.storage_path" and err.run_id == run_dirs[0].name
    # still one stage run for this key, FAILED again (never reused later)
    assert [(rid, status) for rid, kind, status in _stage_runs(tmp) if rid not in {r[0] for r in before}] == \
        [(run_id, "FAILED")]
    print(f"\n[storage-faults] resume from truncated Ray Train checkpoint: CheckpointError names "
          f"{Path(err.file).relative_to(tmp)}")


# --- (e) out of disk while writing a checkpoint ------------------------------------------------


@pytest.fixture(params=["tmpfs", "simulated"])
def small_disk(request, tmp_path):
    """``(folder, real)``: a real 1 MiB tmpfs (``real``; needs root to mount, else skipped), or a plain
    folder where writes fail with ENOSPC past 1 MiB (the ``_open_for_write`` seam)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if request.param == "simulated":
        yield mnt, False
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()[:100]}); the simulated case runs")
    try:
        yield mnt, True
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


class _FullDiskFile:
    """A file that fails like a full disk once ``limit`` bytes have been written."""

    def __init__(self, path, limit):
        self._f, self._left = open(path, "wb"), limit

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        if n > self._left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _fill_limit(monkeypatch, real: bool, limit=1 << 20):
    from raypipe.tracking import checkpoints

    if not real:
        monkeypatch.setattr(checkpoints, "_open_for_write", lambda p: _FullDiskFile(p, limit))


def _state(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(n, generator=g)}, "epoch": seed}


def test_full_disk_while_writing_loop_checkpoint_keeps_the_previous_one(small_disk, monkeypatch):
    from raypipe.tracking import CheckpointError
    from raypipe.tracking.checkpoints import atomic_write, load_state_file

    disk, real = small_disk
    _fill_limit(monkeypatch, real)
    path = disk / "state.pt"
    first = _state(20_000, 1)  # 80 kB: fits
    atomic_write(path, lambda f: torch.save(first, f), "run-a")
    with pytest.raises(CheckpointError) as e:  # 2 MB: does not fit on the 1 MiB disk
        atomic_write(path, lambda f: torch.save(_state(500_000, 2), f), "run-a")
    msg = str(e.value)
    assert str(path) in msg and "no space left on device" in msg and "run-a" in msg
    assert isinstance(e.value.__cause__, (OSError, RuntimeError))
    # the previous checkpoint is untouched and loads with the same weights; no temp file left
    back = load_state_file(path, "run-a")
    assert back["epoch"] == 1 and torch.equal(back["model"]["w"], first["model"]["w"])
    assert sorted(os.listdir(disk)) == ["state.pt"]
    print(f"\n[storage-faults] full disk ({'1 MiB tmpfs' if real else 'simulated ENOSPC'}): {msg[:200]}")


def test_full_disk_while_staging_an_mlflow_checkpoint_uploads_nothing(small_disk, monkeypatch, tmp_path):
    import tempfile

    import mlflow

    from raypipe.tracking import CheckpointError
    from raypipe.tracking.checkpoints import save_checkpoint

    disk, real = small_disk
    _fill_limit(monkeypatch, real)
    monkeypatch.setattr(tempfile, "tempdir", str(disk))  # the staging folder lands on the small disk
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("staging", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(client, run_id, {"w": torch.randn(500_000)}, {"kind": "resnet"})
    assert e.value.run_id == run_id and e.value.file.endswith("state.pt") and "no space left" in str(e.value)
    assert client.list_artifacts(run_id) == []  # no half checkpoint in the run
    assert os.listdir(disk) == []  # staging cleaned up
    # with room, the same call writes a checkpoint that loads back
    save_checkpoint(client, run_id, {"w": torch.ones(10)}, {"kind": "resnet"})
    assert {f.path for f in client.list_artifacts(run_id, "model")} == {"model/state.pt", "model/spec.json"}


def test_atomic_write_error_that_is_not_enospc_still_names_the_file(tmp_path):
    from raypipe.tracking import CheckpointError
    from raypipe.tracking.checkpoints import atomic_write

    path = tmp_path / "state.pt"
    path.write_bytes(b"previous")

    def boom(f):
        f.write(b"half")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(CheckpointError) as e:
        atomic_write(path, boom, "run-b")
    assert str(path) in str(e.value) and "Input/output error" in str(e.value)
    assert path.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["state.pt"]
