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
