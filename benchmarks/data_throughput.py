"""Data-layer benchmark: tiles/s from object storage to model-ready arrays, cloud detection cost, memory.

In one run on this machine (everything local; setup time is excluded from every figure):

1. **Setup.** A moto S3 server on 127.0.0.1 (a free port, never 5000) as a subprocess
   (``raypipe.testing.S3TestServer``, the one the tests use), reached through
   ``AWS_ENDPOINT_URL`` exactly as S3 would be; ``--tiles`` N generated 256 x 256 tiles of the
   *source* domain of the synthetic benchmark (Sentinel-1 VV/VH float32 + 13-band Sentinel-2 L1C
   uint16 + land cover, SEN12MS layout) written to ``s3://bench/synthetic/source`` (by the
   generator's public renderer, ``raypipe.synthetic.render_tiles``); a manifest written by
   ``prepare("sen12ms", ...)`` on that folder.
2. **Throughput**, the same work three ways: read S1 + S2 from the S3 server, decode, simulated
   clouds (``clouds.mode=simulate``, preset ``thick``), normalise (the pipeline's ``Normaliser``,
   z-score on the 10 land bands and S1), float32 arrays in batches of ``--batch-size``:

   a. the Ray Data pipeline, ``TilePipeline(cfg).iter_batches(batch_size)`` on ``ray.init(num_cpus=2)``;
   b. a bare single-process loop calling, row by row, the pipeline's own per-sample function
      (:func:`per_sample`: storage read -> raster decode -> ``CloudStage`` -> ``Normaliser``), then
      stacking batches;
   c. a ``torch.utils.data.DataLoader`` (``num_workers=2``, persistent workers) over a map-style
      ``Dataset`` whose ``__getitem__`` calls the same per-sample function.

   Each is warmed up first (worker processes started, modules imported, per-process state built);
   a timed pass consumes every batch of all N samples and counts only samples delivered in
   complete float32 batches. The three are timed ``--rounds`` times in rotating order and the
   median is reported (``benchmarks/harness.py``: ``repeat_rotating``, ``CpuMeter``,
   ``QuietGate``). Fairness: the same batch size and per-sample function everywhere; every
   worker process runs at nice 0 (Ray's default would nice its workers to 15) and with one BLAS
   thread (as Ray gives a 1-CPU task); the CPU time per tile of each method (all its processes,
   the S3 server included) is reported beside its rate, and so is the load other users put on
   this shared machine during the pass (``--quiet-gate`` waits, bounded, for it to drop first).
3. **Cloud detection**: ``benchmarks/cloud_detection.run(real_root, repeats)`` (imported as a
   sibling module) on the real SEN12MS-CR tiles (reduced-resolution vs full-resolution
   s2cloudless: ms/tile, speed-up, IoU).
4. **Memory**: peak of the summed RSS of the driver and every Ray process (raylet, GCS, workers;
   not the S3 server), sampled every 0.2 s by a psutil thread (``harness.MemorySampler``), while
   streaming N and then 10 x N tiles through the Ray Data pipeline. The 10 x N stream repeats the
   N manifest rows 10 times with distinct sample ids (so each repeat gets its own simulated
   clouds) pointing at the same files. Peak object-store usage is sampled alongside.

A summary block at the end lists every figure and whether its target is met; ``--json PATH``
also writes every figure (per round, medians, memory, cloud detection) as raw JSON.

    .venv/bin/python benchmarks/data_throughput.py                 # defaults: 512 tiles
    .venv/bin/python benchmarks/data_throughput.py --tiles 128 --skip-rss --rounds 1   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from harness import CpuMeter, MemorySampler, QuietGate, emit, repeat_rotating, run_info
from raypipe.testing import AWS_ENV_KEYS, S3TestServer, use_s3_env

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "real"
BUCKET = "bench"

TARGET_RAY_VS_BARE = 1.4
TARGET_RAY_VS_LOADER = 1.3  # issue: keep the accelerator fed
TARGET_DETECT_SPEEDUP = 30.0
TARGET_DETECT_IOU = 0.85
TARGET_RSS_GROWTH = 0.20


def per_sample(plan):
    """The pipeline's own per-sample function for ``plan``: ``load(row) -> dict`` of arrays (storage
    read -> raster decode -> ``CloudStage`` -> ``Normaliser``); builds its per-process state once."""
    from raypipe.data.pipeline import SampleReader

    return SampleReader(plan).load


# --------------------------------------------------------------------------------------
# Setup: tiles, manifest (the S3 server is raypipe.testing.S3TestServer)
# --------------------------------------------------------------------------------------


def generate_source(out: str, tiles: int, size: int, seed: int = 0, workers: int = 2) -> None:
    """N tiles of the synthetic benchmark's *source* domain (S1 + 13-band S2 + lc) under ``out``
    (``<out>/source/...``). Only the source domain: the target's clouds and masks are not needed here
    and would double the setup time."""
    from raypipe.synthetic import render_tiles

    render_tiles(out, tiles, size, seed, domains=("source",), scene_size=50, workers=workers)


def setup_data(server: S3TestServer, tiles: int, size: int) -> str:
    """Generate tiles into s3://bench/synthetic/source and write its manifest; returns the manifest URI."""
    from raypipe.data.prepare import prepare

    server.make_bucket(BUCKET)
    root = f"s3://{BUCKET}/synthetic/source"
    generate_source(f"s3://{BUCKET}/synthetic", tiles, size)
    manifest = f"s3://{BUCKET}/synthetic-source.parquet"
    rep = prepare("sen12ms", root, manifest)
    if rep.samples_written != tiles:
        raise RuntimeError(f"manifest has {rep.samples_written} samples, expected {tiles}: {rep.summary()}")
    return manifest


# --------------------------------------------------------------------------------------
# The work, three ways
# --------------------------------------------------------------------------------------


def data_config(manifest: str, **overrides):
    from raypipe.config import from_dict
    from raypipe.data.pipeline import DataConfig

    # cache off: every timed pass does the whole per-sample work, as the other sides do (the decoded-split
    # cache, which would serve later passes from the object store, is measured on its own: run_epochs)
    cfg = {"manifest": manifest, "optical": "clear", "use_sar": True, "cache": "off",
           "clouds": {"mode": "simulate", "preset": "thick"}, "normalise": {"mode": "zscore"}, **overrides}
    return from_dict(DataConfig, cfg, "data")


def consume(batch, counts: dict) -> None:
    """What every method does with a batch: check it is complete, model-ready float32, and count it."""
    opt, sar = batch["optical"], batch["sar"]
    n = len(batch["sample_id"])
    if not (opt.dtype == sar.dtype and str(opt.dtype).endswith("float32")) or len(opt) != n or len(sar) != n:
        raise RuntimeError(f"incomplete or non-float32 batch: {opt.dtype} {tuple(opt.shape)}, {sar.dtype}")
    counts["samples"] += n
    counts["checksum"] += float(opt[:, 0, 0, 0].sum())  # reads the batch (forces any lazy view)


def stack_batch(rows: list[dict], samples: list[dict]) -> dict:
    out = {"sample_id": np.array([r["sample_id"] for r in rows], dtype=object),
           "label": np.array([r["label"] for r in rows], dtype=np.int64)}
    for key in samples[0]:
        out[key] = np.stack([s[key] for s in samples])
    out["cloud_fraction"] = out["cloud_mask"].reshape(len(rows), -1).mean(axis=1).astype(np.float32)
    return out


def run_ray(pipe, batch_size: int) -> dict:
    counts = {"samples": 0, "checksum": 0.0}
    start = time.perf_counter()
    for batch in pipe.iter_batches(batch_size=batch_size):
        consume(batch, counts)
    counts["seconds"] = time.perf_counter() - start
    return counts


def warm_ray(pipe, batch_size: int) -> None:
    """Start both worker processes, import and build their per-process state (not timed)."""
    n = min(len(pipe.frame), 4 * pipe.cfg.rows_per_block)
    for _ in pipe.dataset().limit(n).iter_batches(batch_size=batch_size, batch_format="numpy"):
        pass


def one_blas_thread() -> None:
    """One BLAS thread in this process, as Ray gives its 1-CPU tasks (``OMP_NUM_THREADS=1``).

    The cloud simulator's noise is a small matrix product; OpenBLAS's default of one thread per
    core makes it spin on both cores for nothing (the bare loop ran about 35 % slower, with 2.5x
    the CPU time per tile). Applied to the bare loop and to every DataLoader worker, so no method
    is handicapped by it.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def run_bare(plan, rows: list[dict], batch_size: int) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        load = per_sample(plan)
        load(rows[0])  # warm-up: imports, first connection
        counts = {"samples": 0, "checksum": 0.0}
        start = time.perf_counter()
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            consume(stack_batch(chunk, [load(r) for r in chunk]), counts)
        counts["seconds"] = time.perf_counter() - start
    return counts


class TileDataset:
    """Map-style dataset doing the pipeline's per-sample work (built lazily in each loader worker)."""

    def __init__(self, plan, rows: list[dict]):
        self.plan, self.rows, self._load = plan, rows, None
        self.limit = 0  # > 0: a short epoch (warm-up); read by the sampler in the main process

    def __len__(self) -> int:
        return min(self.limit, len(self.rows)) if self.limit else len(self.rows)

    def __getitem__(self, i: int) -> dict:
        if self._load is None:
            self._load = per_sample(self.plan)
        row = self.rows[i]
        s = self._load(row)
        s["cloud_fraction"] = np.float32(s["cloud_mask"].mean())
        s["label"] = int(row["label"])
        s["sample_id"] = row["sample_id"]
        return s


def make_loader(plan, rows: list[dict], batch_size: int, workers: int):
    import torch.utils.data as tud

    ds = TileDataset(plan, rows)
    # spawn: the driver holds Ray's and s3fs's threads, which a forked child must not inherit.
    return tud.DataLoader(ds, batch_size=batch_size, num_workers=workers, persistent_workers=True,
                          multiprocessing_context="spawn", prefetch_factor=2, worker_init_fn=_loader_worker_init)


def _loader_worker_init(_worker_id: int) -> None:
    one_blas_thread()


def run_loader(loader) -> dict:
    counts = {"samples": 0, "checksum": 0.0}
    start = time.perf_counter()
    for batch in loader:
        consume(batch, counts)
    counts["seconds"] = time.perf_counter() - start
    return counts


def warm_loader(loader, batch_size: int) -> None:
    """One complete short epoch (two batches per worker): the persistent workers are started and
    warm, and idle afterwards (a partly consumed epoch would leave them prefetching in the
    background, competing with whatever is timed next)."""
    loader.dataset.limit = 2 * loader.num_workers * batch_size
    try:
        for _ in loader:
            pass
    finally:
        loader.dataset.limit = 0


def run_epochs(args, manifest: str, n: int, loader, gate) -> dict:
    """``--epochs`` passes over the same N samples, as training does: the Ray Data pipeline with the
    decoded-split cache (``cache: auto``; ``--cache-fraction`` of the object store, so that N decoded
    tiles fit), which decodes on the first pass and serves the later ones from the object store,
    against the DataLoader, which does the whole per-sample work on every pass. Same output on both
    sides (every sample, the same simulated clouds, seeded by sample id), not the same work per pass:
    that is the point of the cache. One timed run each, after a quiet gate; the cache is built inside
    the timing (its first pass counts)."""
    from raypipe.data.pipeline import TilePipeline

    out = {}
    for side in ("ray_cached", "loader"):
        gate.wait()
        if side == "ray_cached":
            pipe = TilePipeline(data_config(manifest, limit=n, cache="auto", cache_fraction=args.cache_fraction))
            decision = pipe.cache_decision()
            passes = []
            with CpuMeter() as cpu:
                for _ in range(args.epochs):
                    passes.append(run_ray(pipe, args.batch_size))
            out["cache"] = decision
        else:
            passes = []
            with CpuMeter() as cpu:
                for _ in range(args.epochs):
                    passes.append(run_loader(loader))
        if any(p["samples"] != n for p in passes):
            raise RuntimeError(f"{side} delivered {[p['samples'] for p in passes]} of {n} samples per pass")
        seconds = sum(p["seconds"] for p in passes)
        out[side] = {"pass_seconds": [round(p["seconds"], 2) for p in passes], "seconds": round(seconds, 2),
                     "tiles_per_s": round(args.epochs * n / seconds, 1),
                     "cpu_ms": round(1000 * cpu.seconds / (args.epochs * n), 1),
                     "checksums": [round(p["checksum"], 3) for p in passes]}
        print(f"[epochs] {side:10s}: {args.epochs} passes of {n} in {seconds:.1f} s "
              f"({', '.join(f'{p:.1f}' for p in out[side]['pass_seconds'])}) = {out[side]['tiles_per_s']:.1f} tiles/s; "
              f"{out[side]['cpu_ms']:.0f} CPU-ms/tile", flush=True)
    if not out["cache"]["cache"]:
        print(f"[epochs] the split did not fit the cache ({out['cache']['why']}): the Ray side streamed", flush=True)
    out["ratio"] = round(out["ray_cached"]["tiles_per_s"] / out["loader"]["tiles_per_s"], 3)
    # each pass's sum over its batches of one pixel per sample (float32 sums: equal up to summation order)
    out["same_output"] = bool(np.allclose(out["ray_cached"]["checksums"], out["loader"]["checksums"], rtol=1e-4))
    return out


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def _object_store_probe():
    """A callable returning the object store's used bytes (Ray's raylet stats RPC), or None if unavailable."""
    try:
        import ray
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

        node = ray.nodes()[0]
        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        request = node_manager_pb2.FormatGlobalMemoryInfoRequest(include_memory_info=False)

        def used():
            try:
                return int(stub.FormatGlobalMemoryInfo(request, timeout=5).store_stats.object_store_bytes_used)
            except Exception:
                return None

        return used if used() is not None else None
    except Exception:
        return None


def repeated_frame(frame, times: int):
    """The manifest rows ``times`` times over, with distinct sample ids (``<id>#r<k>``), same files."""
    import pandas as pd

    parts = []
    for k in range(times):
        part = frame.copy()
        if k:
            part["sample_id"] = part["sample_id"] + f"#r{k}"
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out.attrs = dict(frame.attrs)
    return out


def stream_peak(pipe, batch_size: int, exclude: set[int]) -> dict:
    import gc

    gc.collect()
    with MemorySampler(exclude, store_probe=_object_store_probe()) as mem:
        res = run_ray(pipe, batch_size)
    return {"samples": res["samples"], "seconds": res["seconds"], "peak_rss": mem.peak_rss,
            "peak_pss": mem.peak_pss, "peak_shmem": mem.peak_shmem,
            "peak_store": mem.peak_store, "n_samples": mem.samples}


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def load_cloud_detection():
    """``benchmarks/cloud_detection.py``, imported as a sibling module (this folder is on sys.path)."""
    try:
        import cloud_detection
    except ModuleNotFoundError as exc:
        if exc.name != "cloud_detection":
            raise
        raise FileNotFoundError(f"{REPO / 'benchmarks' / 'cloud_detection.py'} is missing "
                                "(use --skip-clouds to run without the cloud-detection figures)") from exc
    return cloud_detection


def fmt_mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2 ** 20:,.0f} MiB"


def mem_line(m: dict) -> str:
    return (f"peak RSS sum {fmt_mib(m['peak_rss'])} (of which shared memory {fmt_mib(m['peak_shmem'])}), "
            f"peak PSS sum {fmt_mib(m['peak_pss'])}, peak object store {fmt_mib(m['peak_store'])} "
            f"({m['seconds']:.1f} s at {m['samples'] / m['seconds']:.1f} tiles/s, {m['n_samples']} samples)")


def mark(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def start_ray() -> None:
    import ray
    from ray.data import DataContext

    # Ray starts its workers at nice 15 (so a driver is never starved). The bare loop and the
    # DataLoader workers run at nice 0, and this machine is shared: with the default, background load
    # from other users would slow the Ray workers alone. All three compete at nice 0 here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in AWS_ENV_KEYS}},
             _system_config={"worker_niceness": 0})
    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, default=512, help="tiles generated and streamed per pass (N)")
    ap.add_argument("--size", type=int, default=256, help="tile size in pixels")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of all three methods")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per cloud-detection measurement")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes of each throughput method (median)")
    ap.add_argument("--quiet-gate", type=float, default=0.3,
                    help="before each timed pass wait (bounded) until other users' load is below this many cores "
                         "(the machine may be shared); 0 = never wait")
    ap.add_argument("--real-root", default=os.environ.get("RAYPIPE_REAL_DATA", str(DEFAULT_REAL)),
                    help="folder with SEN12MS-CR/GLF-CR/data (real tiles) for the cloud-detection figures")
    ap.add_argument("--epochs", type=int, default=3,
                    help="passes of the multi-epoch figure (Ray Data with the decoded-split cache vs the "
                         "DataLoader); 1 skips it")
    ap.add_argument("--cache-fraction", type=float, default=0.6,
                    help="data.pipeline.cache_fraction of the multi-epoch figure's Ray side")
    ap.add_argument("--skip-rss", action="store_true", help="skip the N / 10 x N memory measurement")
    ap.add_argument("--skip-clouds", action="store_true", help="skip the cloud-detection figures")
    ap.add_argument("--endpoint", default="", help="reuse a running S3 server (with --manifest) instead of "
                    "starting one and generating tiles; for quick iterations")
    ap.add_argument("--manifest", default="", help="manifest URI on the --endpoint server")
    ap.add_argument("--json", default="", help="also write every figure as raw JSON to this file")
    args = ap.parse_args(argv)

    t_all = time.perf_counter()
    print(f"data_throughput: {args.tiles} tiles of {args.size}x{args.size}, batch {args.batch_size}, "
          f"rounds {args.rounds}, {os.cpu_count()} CPUs", flush=True)
    with contextlib.ExitStack() as stack:
        if args.endpoint:
            stack.enter_context(use_s3_env(args.endpoint))
            server_pid = -1
            manifest = args.manifest
        else:
            server = stack.enter_context(S3TestServer())
            stack.enter_context(server.use_env())
            server_pid = server.pid
            t0 = time.perf_counter()
            manifest = setup_data(server, args.tiles, args.size)
            print(f"[setup] S3 server {server.endpoint}; generated {args.tiles} source tiles and wrote {manifest} "
                  f"in {time.perf_counter() - t0:.1f} s (excluded from all figures)", flush=True)
        res = benchmark(args, manifest, server_pid)
    res["wall_s"] = time.perf_counter() - t_all
    emit({"benchmark": "data_throughput", "args": vars(args), "run": run_info(), **res}, args.json or None,
         text=summary(res, args))
    return 0


def benchmark(args, manifest: str, server_pid: int) -> dict:
    import ray

    from raypipe.data.pipeline import TilePipeline

    res: dict = {}
    start_ray()
    try:
        pipe = TilePipeline(data_config(manifest))
        if args.tiles and len(pipe.frame) > args.tiles:
            pipe = TilePipeline(data_config(manifest, limit=args.tiles))
        n = len(pipe.frame)
        rows = pipe.frame.to_dict("records")
        res["n"] = n
        cfg = pipe.cfg
        print(f"[throughput] {n} samples; pipeline rows_per_block={cfg.rows_per_block}, "
              f"read_threads={cfg.read_threads}; optical {pipe.num_optical_bands} bands, SAR "
              f"{pipe.num_sar_bands} bands", flush=True)

        loader = make_loader(pipe.plan, rows, args.batch_size, 2)
        t0 = time.perf_counter()
        warm_ray(pipe, args.batch_size)
        warm_loader(loader, args.batch_size)
        print(f"[throughput] warm-up (Ray workers, loader workers) {time.perf_counter() - t0:.1f} s", flush=True)
        methods = {"ray": lambda: run_ray(pipe, args.batch_size),
                   "bare": lambda: run_bare(pipe.plan, rows, args.batch_size),
                   "loader": lambda: run_loader(loader)}
        gate = QuietGate(args.quiet_gate)

        def wait_for_quiet(_round: int, _method: str) -> None:
            waited, before = gate.wait()
            if waited > gate.window + 1:
                print(f"[throughput] waited {waited:.0f} s for other users' load to drop (now {before:.2f} cores)",
                      flush=True)

        def metered(run):
            def call() -> dict:
                with CpuMeter() as cpu:
                    out = run()
                return {**out, "cpu_ms": 1000 * cpu.seconds / n, "other_cores": cpu.other_cores}
            return call

        def report(r: int, m: str, out: dict, _seconds: float) -> None:
            if out["samples"] != n:
                raise RuntimeError(f"{m} delivered {out['samples']} of {n} samples")
            print(f"[throughput] round {r + 1} {m:6s}: {out['samples']} samples in {out['seconds']:.2f} s "
                  f"= {out['samples'] / out['seconds']:.1f} tiles/s; {out['cpu_ms']:.0f} CPU-ms/tile; other users' "
                  f"load {out['other_cores']:.2f} of {os.cpu_count()} cores", flush=True)

        # Rates from each method's own timing of its pass (``seconds``: its batches only, not its set-up).
        rot = repeat_rotating({m: metered(run) for m, run in methods.items()}, args.rounds,
                              value=lambda out, _s: out["samples"] / out["seconds"],
                              before=wait_for_quiet, after=report)
        methods.clear()
        if args.epochs > 1:
            res["epochs"] = run_epochs(args, manifest, n, loader, gate)
        del loader  # shuts its persistent workers down: they must not count in the memory figures
        import gc

        gc.collect()
        for child in multiprocessing.active_children():
            child.join(timeout=30)
        res["rates"] = rot.values
        res["cpu_ms"] = {m: statistics.median(o["cpu_ms"] for o in v) for m, v in rot.results.items()}
        res["other_cores"] = {m: statistics.mean(o["other_cores"] for o in v) for m, v in rot.results.items()}
        res["rate"] = rot.medians
        res["order"] = [f"{r + 1}:{m}" for r, m in rot.calls]

        if not args.skip_rss:
            exclude = {server_pid} if server_pid > 0 else set()
            small = stream_peak(pipe, args.batch_size, exclude)
            print(f"[memory] N = {small['samples']}: " + mem_line(small), flush=True)
            big_pipe = TilePipeline(data_config(manifest, check_files=False),
                                    frame=repeated_frame(pipe.frame.drop(columns=["index"]), 10))
            big = stream_peak(big_pipe, args.batch_size, exclude)
            print(f"[memory] 10 x N = {big['samples']}: " + mem_line(big), flush=True)
            if big["samples"] != 10 * n:
                raise RuntimeError(f"10 x N stream delivered {big['samples']} of {10 * n} samples")
            res["mem"] = {"small": small, "big": big}
    finally:
        ray.shutdown()

    if not args.skip_clouds:
        cd = load_cloud_detection()
        out = cd.run(args.real_root, args.repeats)
        print("[clouds] benchmarks/cloud_detection.run:\n" + cd.report(out), flush=True)
        res["clouds"] = out
    return res


def summary(res: dict, args) -> str:
    rate = res["rate"]
    ray_bare = rate["ray"] / rate["bare"]
    ray_loader = rate["ray"] / rate["loader"]
    lines = ["", "=" * 78, f"SUMMARY (N = {res['n']} tiles of {args.size}x{args.size}, batch {args.batch_size}, "
             f"median of {args.rounds} round(s); whole run {res['wall_s']:.0f} s)", "-" * 78]
    for m, label in (("ray", "Ray Data pipeline (2 CPUs)"), ("bare", "bare single-process loop"),
                     ("loader", "torch DataLoader, 2 workers")):
        runs = ", ".join(f"{v:.1f}" for v in res["rates"][m])
        lines.append(f"{label:30s} {rate[m]:7.1f} tiles/s   (rounds: {runs}; {res['cpu_ms'][m]:.0f} CPU-ms/tile "
                     f"incl. S3 server; other users' load {res['other_cores'][m]:.2f} cores)")
    lines.append(f"Ray / bare        {ray_bare:5.2f}x   target >= {TARGET_RAY_VS_BARE}x   {mark(ray_bare >= TARGET_RAY_VS_BARE)}")
    lines.append(f"Ray / DataLoader  {ray_loader:5.2f}x   target >= {TARGET_RAY_VS_LOADER}x   "
                 f"{mark(ray_loader >= TARGET_RAY_VS_LOADER)}")
    if "epochs" in res:
        e = res["epochs"]
        lines.append(f"{args.epochs} epochs of N: Ray Data, decoded-split cache {e['ray_cached']['tiles_per_s']:.1f} tiles/s "
                     f"(passes {', '.join(f'{p:.1f}' for p in e['ray_cached']['pass_seconds'])} s; "
                     f"{'cached' if e['cache']['cache'] else 'streamed: did not fit'}), DataLoader "
                     f"{e['loader']['tiles_per_s']:.1f} tiles/s (passes {', '.join(f'{p:.1f}' for p in e['loader']['pass_seconds'])} s)")
        lines.append(f"  Ray cached / DataLoader {e['ratio']:5.2f}x   target >= {TARGET_RAY_VS_LOADER}x   "
                     f"{mark(e['ratio'] >= TARGET_RAY_VS_LOADER)}   (same batches: {e['same_output']})")
    if "clouds" in res:
        c = res["clouds"]
        s2c = c["s2cloudless"]
        iou = s2c["iou_pooled"]
        lines.append(f"s2cloudless factor {c['factor']}: {s2c['ms_fast']:.2f} ms/tile vs full resolution "
                     f"{s2c['ms_full']:.1f} ms/tile")
        lines.append(f"  speed-up        {s2c['speedup']:6.1f}x   target >= {TARGET_DETECT_SPEEDUP:.0f}x    "
                     f"{mark(s2c['speedup'] >= TARGET_DETECT_SPEEDUP)}")
        ok = iou is not None and iou >= TARGET_DETECT_IOU
        lines.append(f"  IoU (real cloudy tiles, pooled) {iou:.3f}   target >= {TARGET_DETECT_IOU}   {mark(ok)}"
                     f"   (spliced tiles: mean {c['spliced']['iou_mean']:.3f}, min {c['spliced']['iou_min']:.3f})")
    else:
        lines.append("cloud detection: skipped")
    if "mem" in res:
        s, b = res["mem"]["small"], res["mem"]["big"]
        growth = b["peak_rss"] / s["peak_rss"] - 1
        lines.append(f"peak RSS (driver + Ray processes): N {fmt_mib(s['peak_rss'])}, 10 x N {fmt_mib(b['peak_rss'])} "
                     "(10 x N = the N manifest rows repeated 10x, distinct ids, same files)")
        lines.append(f"  growth          {100 * growth:+6.1f} %  target < {100 * TARGET_RSS_GROWTH:.0f} %     "
                     f"{mark(growth < TARGET_RSS_GROWTH)}")
        pss_growth = b["peak_pss"] / s["peak_pss"] - 1
        lines.append(f"  peak PSS sum (shared pages counted once): N {fmt_mib(s['peak_pss'])}, 10 x N "
                     f"{fmt_mib(b['peak_pss'])} ({100 * pss_growth:+.1f} %)")
        lines.append(f"  peak object store: N {fmt_mib(s['peak_store'])}, 10 x N {fmt_mib(b['peak_store'])}; "
                     f"10 x N streamed at {b['samples'] / b['seconds']:.1f} tiles/s")
    else:
        lines.append("memory: skipped")
    lines.append("=" * 78)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
