"""GPU check: one stage trained on one GPU (Ray Train, NCCL, bf16 autocast) on generated tiles, with
the GPU's utilisation and memory sampled by ``nvidia-smi`` during the epochs, then GPU batch
inference (``runner.predict(use_gpu=True)``). Called by ``benchmarks/gpu_check.sh``, which picks the
Python environment and says "no GPU" on a machine without one; see docs/benchmarks-gpu.md.

    python benchmarks/gpu_check.py                         # GPU defaults: 1024 tiles of 256x256, 3 epochs
    python benchmarks/gpu_check.py --cpu-smoke             # the same code path on CPU, tiny sizes
    python benchmarks/gpu_check.py --report-no-gpu REASON  # only write {"gpu": false, ...} and say so

Steps: generate source-domain tiles with all CPU cores (``raypipe.synthetic.render_tiles``) →
``prepare("sen12ms", ...)`` (train / val scenes) → ``TilePipeline`` (optical, clear, streamed: the
tiles are read and decoded by Ray Data while the GPU trains, so the data-wait figure is the real
feed) → ``StageJob`` (``Supervised``, ResNet) → ``runner.fit`` with ``RayConfig(use_gpu=True)``
(one worker with one GPU; Ray Train's default backend on GPU is NCCL; the loop autocasts to bf16
when ``train.amp`` and CUDA) → ``runner.predict(use_gpu=True)`` over every tile, ``--predict-rounds``
times (each call starts its own actor and loads the model: the figure includes that).

Figures: samples/s per epoch (``train/samples_per_s``; steady state = median of epochs 2..N),
``train/data_wait_fraction`` per epoch, mean GPU utilisation over each epoch's training steps (the
``nvidia-smi`` samples between the epoch's first and last training step, timed on the worker), peak
GPU memory (``nvidia-smi`` memory.used, whole device, and torch's peak allocated in the training
worker), inference samples/s, device name, torch / CUDA / cuDNN / Ray versions. Everything goes to
raw JSON: ``--json``, default ``$OUT/gpu_check.json`` when ``OUT`` is set, else ``./gpu_check.json``.

Standard library only at import (the no-GPU path must not import torch or ray).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # harness.py, when imported from elsewhere
from harness import Timer, emit, run_info  # noqa: E402

GPU_DEFAULTS = {"tiles": 1024, "size": 256, "epochs": 3, "batch_size": 128, "depth": 18, "width": 64,
                "stem": "standard", "predict_batch": 256}
# --cpu-smoke: every step of the GPU path, on CPU, small enough for a 2-core machine.
SMOKE_SIZES = {"tiles": 20, "size": 16, "epochs": 1, "batch_size": 8, "depth": 10, "width": 8,
               "stem": "small", "predict_batch": 8}
QUERY = "timestamp,utilization.gpu,memory.used"
NVIDIA_SMI_TS = "%Y/%m/%d %H:%M:%S.%f"


def default_json_path() -> str:
    out = os.environ.get("OUT")
    return os.path.join(out, "gpu_check.json") if out else os.path.join(os.getcwd(), "gpu_check.json")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, help=f"generated source tiles (default {GPU_DEFAULTS['tiles']})")
    p.add_argument("--size", type=int, help=f"tile side in pixels (default {GPU_DEFAULTS['size']})")
    p.add_argument("--epochs", type=int, help=f"training epochs, the first is warm-up (default {GPU_DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, help=f"global training batch (default {GPU_DEFAULTS['batch_size']})")
    p.add_argument("--depth", type=int, help=f"ResNet depth (default {GPU_DEFAULTS['depth']})")
    p.add_argument("--width", type=int, help=f"ResNet base width (default {GPU_DEFAULTS['width']})")
    p.add_argument("--stem", choices=["standard", "small"], help="ResNet stem (default standard: 256 px tiles)")
    p.add_argument("--predict-batch", type=int, help=f"inference batch (default {GPU_DEFAULTS['predict_batch']})")
    p.add_argument("--predict-rounds", type=int, default=2, help="runner.predict calls (default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=2.0,
                   help="CPUs reserved by the training worker; Ray Data reads with the rest (default 2)")
    p.add_argument("--sample-ms", type=int, default=500, help="nvidia-smi sampling period in ms (default 500)")
    p.add_argument("--gen-workers", type=int, default=0, help="tile-generation processes (default: all cores)")
    p.add_argument("--workdir", default="", help="where tiles and Ray Train storage go (default: a temp folder, removed)")
    p.add_argument("--json", default="", help="raw JSON output (default $OUT/gpu_check.json, else ./gpu_check.json)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run the whole path on CPU with tiny sizes (use_gpu=False, no nvidia-smi)")
    p.add_argument("--report-no-gpu", metavar="REASON", default=None,
                   help="only write {'gpu': false, ...} and print one line (what the shell script does without a GPU)")
    p.add_argument("--report-env-error", metavar="REASON", default=None,
                   help="only write {'gpu': true, 'error': ...} (no usable Python environment for the GPU run)")
    args = p.parse_args(argv)
    sizes = SMOKE_SIZES if args.cpu_smoke else GPU_DEFAULTS
    for k, v in sizes.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.json = args.json or default_json_path()
    return args


# --------------------------------------------------------------------------------------
# nvidia-smi sampling
# --------------------------------------------------------------------------------------


def parse_sample(line: str, arrival: float) -> tuple[float, float, float] | None:
    """``(unix time, utilisation %, memory used MiB)`` from one ``nvidia-smi --query-gpu=timestamp,
    utilization.gpu,memory.used --format=csv,noheader,nounits`` line (first GPU's line per period),
    or None for a line that is not a sample ("[N/A]", an error). The timestamp is nvidia-smi's own
    (local time); ``arrival`` (when the line was read) stands in where it does not parse."""
    parts = [x.strip() for x in line.split(",")]
    if len(parts) != 3:
        return None
    try:
        util, mem = float(parts[1]), float(parts[2])
    except ValueError:
        return None
    try:
        t = datetime.datetime.strptime(parts[0], NVIDIA_SMI_TS).timestamp()
    except ValueError:
        t = arrival
    return t, util, mem


class GpuSampler:
    """``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits
    -lms PERIOD`` as a background process for the life of the block; a thread keeps every sample
    (``samples``: (unix time, util %, MiB)). ``timestamp`` is queried beside the two figures so that
    samples can be matched to epoch windows whatever the pipe's buffering does to arrival times."""

    def __init__(self, period_ms: int = 500, gpu_index: int = 0):
        self.cmd = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", str(period_ms),
                    "-i", str(gpu_index)]
        self.samples: list[tuple[float, float, float]] = []
        self.errors: list[str] = []
        self._proc = None
        self._thread = None

    def __enter__(self) -> "GpuSampler":
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            s = parse_sample(line, time.time())
            if s is None:
                if line.strip() and len(self.errors) < 5:
                    self.errors.append(line.strip())
            else:
                self.samples.append(s)

    def __exit__(self, *exc) -> None:
        self._proc.terminate()
        try:
            _, err = self._proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        self._thread.join(timeout=5)
        if err and err.strip():
            self.errors.append(err.strip()[:500])


def in_window(samples, start: float, end: float) -> list[tuple[float, float, float]]:
    return [s for s in samples if start <= s[0] <= end]


def window_stats(samples, start: float, end: float) -> dict:
    """Mean utilisation and peak memory of the samples taken within [start, end]."""
    w = in_window(samples, start, end)
    return {"samples": len(w), "mean_util_pct": statistics.fmean(s[1] for s in w) if w else None,
            "peak_mem_mib": max(s[2] for s in w) if w else None, "seconds": end - start}


# --------------------------------------------------------------------------------------
# What the run reports
# --------------------------------------------------------------------------------------


def epoch_windows(step_times: list[float], logged_at: list[float]) -> list[tuple[float, float, int]]:
    """Per epoch, (first, last training-step time, steps): the steps timed between the previous
    epoch's metrics report and this one's (reports come after each epoch's training and validation)."""
    out, lo = [], float("-inf")
    steps = sorted(step_times)
    for hi in logged_at:
        mine = [t for t in steps if lo < t <= hi]
        out.append((mine[0], mine[-1], len(mine)) if mine else (hi, hi, 0))
        lo = hi
    return out


def steady(values: list[float]) -> float | None:
    """Median of epochs 2..N (the first is warm-up: cuDNN autotuning, Ray Data start-up); with one
    epoch, that epoch."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals[1:] if len(vals) > 1 else vals)


def summarise(history: list[dict], step_times: list[float], samples, predict_rounds: list[dict]) -> dict:
    """The figures the check prints, from the per-epoch metrics (with ``_logged_at``), the timed
    training steps, the nvidia-smi samples and the predict rounds."""
    windows = epoch_windows(step_times, [h["_logged_at"] for h in history])
    epochs = []
    for h, (start, end, n_steps) in zip(history, windows):
        gpu = window_stats(samples, start, end) if samples else None
        epochs.append({"epoch": int(h["epoch"]) + 1, "samples_per_s": h["train/samples_per_s"],
                       "epoch_s": h["train/epoch_s"], "data_wait_fraction": h["train/data_wait_fraction"],
                       "samples": h["train/samples"], "steps_timed": n_steps, "val_oa": h.get("val/oa"),
                       "gpu_util_pct": gpu["mean_util_pct"] if gpu else None,
                       "gpu_samples": gpu["samples"] if gpu else 0,
                       "gpu_peak_mem_mib": gpu["peak_mem_mib"] if gpu else None})
    train_samples = [s for s in samples if any(a <= s[0] <= b for a, b, _ in windows)]
    out = {
        "samples_per_s": [e["samples_per_s"] for e in epochs],
        "steady_samples_per_s": steady([e["samples_per_s"] for e in epochs]),
        "data_wait_fraction": [e["data_wait_fraction"] for e in epochs],
        "steady_data_wait_fraction": steady([e["data_wait_fraction"] for e in epochs]),
        "gpu_util_pct": [e["gpu_util_pct"] for e in epochs],
        "steady_gpu_util_pct": steady([e["gpu_util_pct"] for e in epochs]),
        "mean_gpu_util_pct_training": statistics.fmean(s[1] for s in train_samples) if train_samples else None,
        "peak_gpu_mem_mib": max((s[2] for s in samples), default=None),
        "peak_gpu_mem_mib_training": max((s[2] for s in train_samples), default=None),
        "predict_samples_per_s": [r["samples_per_s"] for r in predict_rounds],
        "epochs": epochs,
    }
    return out


def fmt(x, spec: str = ".1f", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def report_text(res: dict) -> str:
    s, a = res["summary"], res["args"]
    mode = "CPU SMOKE (use_gpu=False: no GPU figure)" if res["mode"] == "cpu-smoke" else "GPU"
    lines = ["=" * 78, f"gpu_check [{mode}]  {res['n_train']} training tiles of {a['size']}x{a['size']}, "
             f"ResNet-{a['depth']} width {a['width']} ({a['stem']} stem), batch {a['batch_size']}, "
             f"{a['epochs']} epoch(s)",
             f"device: {res['device'].get('name') or 'cpu'}   torch {res['versions']['torch']} "
             f"(CUDA {res['versions']['cuda']}, cuDNN {res['versions']['cudnn']})   ray {res['versions']['ray']}",
             f"training worker: device {res['worker'].get('device')}, backend {res['worker'].get('backend')}, "
             f"bf16 autocast {res['worker'].get('bf16_autocast')}",
             "-" * 78,
             "epoch  samples/s  epoch s  data-wait  GPU util %  GPU mem MiB  steps"]
    for e in s["epochs"]:
        lines.append(f"{e['epoch']:>5}  {e['samples_per_s']:>9.1f}  {e['epoch_s']:>7.2f}  "
                     f"{e['data_wait_fraction']:>9.3f}  {fmt(e['gpu_util_pct']):>10}  "
                     f"{fmt(e['gpu_peak_mem_mib'], '.0f'):>11}  {e['steps_timed']:>5}")
    lines += ["-" * 78,
              f"steady state (median of epochs 2..N): {fmt(s['steady_samples_per_s'])} samples/s, "
              f"data-wait fraction {fmt(s['steady_data_wait_fraction'], '.3f')}, "
              "GPU util " + (f"{s['steady_gpu_util_pct']:.1f} %" if s['steady_gpu_util_pct'] is not None else "n/a"),
              f"mean GPU utilisation during training epochs: {fmt(s['mean_gpu_util_pct_training'], '.1f')} % "
              f"({sum(e['gpu_samples'] for e in s['epochs'])} nvidia-smi samples)",
              f"peak GPU memory: {fmt(s['peak_gpu_mem_mib'], '.0f')} MiB (nvidia-smi, whole run), "
              f"{fmt(s['peak_gpu_mem_mib_training'], '.0f')} MiB during training steps; torch peak allocated "
              f"in the worker {fmt(res['worker'].get('max_allocated_mib'), '.0f')} MiB",
              "batch inference (runner.predict, use_gpu=%s, batch %d, %d tiles): %s samples/s per round "
              "(each round includes actor start and model load)" % (
                  res["mode"] == "gpu", a["predict_batch"], res["n_predict"],
                  ", ".join(f"{x:.1f}" for x in s["predict_samples_per_s"])),
              f"wall: generate {res['timing']['generate_s']:.1f} s, fit {res['timing']['fit_s']:.1f} s, "
              f"predict {res['timing']['predict_s']:.1f} s, total {res['timing']['total_s']:.1f} s",
              f"raw JSON: {res['json']}", "=" * 78]
    return "\n".join(lines)


def no_gpu(reason: str, path: str) -> int:
    """The no-GPU answer: one line, a JSON ``{"gpu": false, ...}``, exit status 0."""
    emit({"benchmark": "gpu_check", "gpu": False, "reason": reason, "run": run_info(), "json": path}, path,
         text=f"gpu_check: no GPU on this machine ({reason}); nothing measured, wrote {path}")
    return 0


def env_error(reason: str, path: str) -> int:
    emit({"benchmark": "gpu_check", "gpu": True, "error": reason, "device": {"nvidia_smi_L": nvidia_smi_list()},
          "run": run_info(), "json": path}, path, text=f"gpu_check: ERROR: {reason}\n(wrote {path})",
         stream=sys.stderr)
    return 3


def nvidia_smi_list() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [x for x in out.splitlines() if x.strip()]


# --------------------------------------------------------------------------------------
# The run (imports raypipe, torch and ray)
# --------------------------------------------------------------------------------------


class _Collector:
    """A Ray actor: per-epoch metrics from the rank-0 worker, and each training step's start time."""

    def __init__(self):
        self.items, self.steps = [], []

    def add(self, metrics):
        self.items.append(metrics)

    def step(self, t):
        self.steps.append(t)

    def get(self):
        return self.items, self.steps


class _WorkerHandle:
    """Stands in for an MLflow RunHandle (``log_metrics`` runs on the rank-0 worker after each epoch):
    forwards the metrics to the collector with the time and what the worker runs on (device, process
    group backend, bf16 support, torch's peak GPU memory)."""

    def __init__(self, actor):
        self.actor = actor

    def log_metrics(self, metrics, step=None):
        import ray
        import ray.train.torch
        import torch
        import torch.distributed as dist

        device = ray.train.torch.get_device()
        info = {"device": str(device), "backend": dist.get_backend() if dist.is_initialized() else None,
                "cuda_available": torch.cuda.is_available()}
        if device.type == "cuda":
            info.update(name=torch.cuda.get_device_name(device), bf16_supported=torch.cuda.is_bf16_supported(),
                        max_allocated_mib=torch.cuda.max_memory_allocated(device) / 2**20,
                        max_reserved_mib=torch.cuda.max_memory_reserved(device) / 2**20)
        ray.get(self.actor.add.remote({**dict(metrics), "_logged_at": time.time(), "_worker": info}))


def timed_objective(base_cls, collector):
    """``base_cls`` whose ``loss`` first sends the step's start time to ``collector`` (fire and forget:
    one small actor call per step), so GPU samples can be matched to the epochs' training steps."""

    class StepTimed(base_cls):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self._collector = collector

        def loss(self, model, teachers, batch):
            self._collector.step.remote(time.time())
            return super().loss(model, teachers, batch)

    StepTimed.__name__ = StepTimed.__qualname__ = f"StepTimed{base_cls.__name__}"
    return StepTimed


def versions() -> dict:
    import ray
    import torch

    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "ray": ray.__version__, "python": sys.version.split()[0],
            "nccl": _nccl_version(torch)}


def _nccl_version(torch) -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # a build without NCCL
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def run(args) -> int:
    t_start = time.perf_counter()
    use_gpu = not args.cpu_smoke
    import torch

    if use_gpu and not torch.cuda.is_available():
        return env_error(f"nvidia-smi sees a GPU but this Python's torch {torch.__version__} cannot use it "
                         f"(torch.version.cuda = {torch.version.cuda}): install the CUDA build of torch "
                         f"(on Linux x86-64, plain `pip install torch==<version>` from the registry), or set "
                         f"PYTHON to an environment that has it", args.json)

    import ray

    from raypipe.config import from_dict
    from raypipe.data.pipeline import DataConfig, TilePipeline
    from raypipe.data.prepare import prepare
    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import StageJob, fit, predict
    from raypipe.objectives import Supervised
    from raypipe.synthetic import render_tiles

    work = args.workdir or tempfile.mkdtemp(prefix="gpu-check-")
    os.makedirs(work, exist_ok=True)
    cores = os.cpu_count() or 1
    try:
        # --- tiles: all CPU cores ------------------------------------------------------------------
        with Timer() as gen:
            root = os.path.join(work, "bench")
            render_tiles(root, tiles=args.tiles, size=args.size, seed=0, domains=("source",),
                         workers=args.gen_workers or None, quiet=False)
            manifest = os.path.join(work, "manifest.parquet")
            prepare("sen12ms", os.path.join(root, "source"), manifest)
        print(f"[gpu_check] generated and prepared {args.tiles} tiles in {gen.seconds:.1f} s", flush=True)

        init = {"num_cpus": cores, "include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if use_gpu:
            init["num_gpus"] = torch.cuda.device_count()
        ray.init(**init)
        ray.data.DataContext.get_current().enable_progress_bars = False
        if use_gpu and ray.cluster_resources().get("GPU", 0) < 1:
            return env_error(f"Ray sees no GPU (cluster resources {ray.cluster_resources()})", args.json)

        def pipeline(split: str) -> TilePipeline:
            return TilePipeline(from_dict(DataConfig, {"manifest": manifest, "split": split, "optical": "clear",
                                                       "use_sar": False, "clouds": {"mode": "none"}}, "data"))

        train_pipe, val_pipe, all_pipe = pipeline("train"), pipeline("val"), pipeline("")
        n_train, n_predict = len(train_pipe.frame), len(all_pipe.frame)  # manifest rows: no pass over the tiles
        spec = {"kind": "resnet", "depth": args.depth, "width": args.width, "stem": args.stem,
                "in_channels": train_pipe.num_optical_bands, "num_classes": len(train_pipe.classes)}
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, schedule="constant", amp=True,
                            max_failures=0)
        # The worker's CPUs are not Ray Data's: leave at least one core to read and decode the tiles.
        ray_cfg = RayConfig(num_workers=1, use_gpu=use_gpu, cpus_per_worker=min(args.cpus_per_worker, max(1, cores - 1)),
                            storage_path=os.path.join(work, "runs"))
        collector = ray.remote(num_cpus=0)(_Collector).remote()
        objective = timed_objective(Supervised, collector)(None, inputs="optical")
        job = StageJob("source", objective, spec, train, train_pipe, val_pipe, {}, "classification",
                       len(train_pipe.classes), train_pipe.classes)
        print(f"[gpu_check] training: {n_train} tiles, use_gpu={use_gpu}, {args.epochs} epoch(s)", flush=True)

        sampler = GpuSampler(args.sample_ms) if use_gpu else None
        if sampler:
            sampler.__enter__()
        try:
            with Timer() as fit_time:
                state, _ = fit(job, ray_cfg, f"gpu-check-{int(time.time())}", run_handle=_WorkerHandle(collector),
                               on_epoch=lambda m: print(f"[gpu_check] epoch {m['epoch']}/{m['epochs']}: "
                                                        f"{m['train/samples_per_s']:.1f} samples/s, data wait "
                                                        f"{m['train/data_wait_fraction']:.3f}", flush=True))
            history, steps = ray.get(collector.get.remote())
            rounds = []
            with Timer() as predict_time:
                for r in range(args.predict_rounds):
                    t0 = time.time()
                    out, seconds = _timed(predict, all_pipe, spec, state, "optical", "classification",
                                          len(train_pipe.classes), 1, use_gpu, args.predict_batch)
                    n = len(out.get("sample_id", []))
                    rounds.append({"round": r + 1, "samples": n, "seconds": seconds, "samples_per_s": n / seconds,
                                   "start": t0, "end": time.time()})
                    print(f"[gpu_check] predict round {r + 1}: {n / seconds:.1f} samples/s", flush=True)
        finally:
            if sampler:
                sampler.__exit__(None, None, None)
        samples = sampler.samples if sampler else []
        for r in rounds:
            gpu = window_stats(samples, r["start"], r["end"]) if samples else {}
            r["gpu_util_pct"], r["gpu_peak_mem_mib"] = gpu.get("mean_util_pct"), gpu.get("peak_mem_mib")

        worker = dict(history[-1].get("_worker", {})) if history else {}
        worker["bf16_autocast"] = bool(train.amp and worker.get("device", "").startswith("cuda"))
        res = {
            "benchmark": "gpu_check", "gpu": use_gpu, "mode": "gpu" if use_gpu else "cpu-smoke",
            "args": {k: v for k, v in vars(args).items() if not k.startswith("report_")},
            "run": run_info(), "json": args.json, "versions": versions(),
            "device": {"name": worker.get("name") or (torch.cuda.get_device_name(0) if use_gpu else None),
                       "nvidia_smi_L": nvidia_smi_list() if use_gpu else []},
            "worker": worker, "n_train": n_train, "n_predict": n_predict, "model": spec,
            "train": {"epochs": train.epochs, "batch_size": train.batch_size, "amp": train.amp},
            "ray": {"num_workers": ray_cfg.num_workers, "use_gpu": ray_cfg.use_gpu,
                    "cpus_per_worker": ray_cfg.cpus_per_worker, "cluster": ray.cluster_resources()},
            "summary": summarise(history, steps, samples, rounds), "predict": rounds,
            "history": [{k: v for k, v in h.items() if not k.startswith("_")} for h in history],
            "step_times": steps, "gpu_samples": samples,
            "sampler": {"cmd": sampler.cmd, "errors": sampler.errors} if sampler else None,
            "timing": {"generate_s": gen.seconds, "fit_s": fit_time.seconds, "predict_s": predict_time.seconds,
                       "total_s": time.perf_counter() - t_start},
        }
        emit(res, args.json, text=report_text(res))
        if use_gpu and not samples:
            print("gpu_check: WARNING: nvidia-smi gave no samples: " + "; ".join(sampler.errors), file=sys.stderr)
        return 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _timed(fn, *a):
    with Timer() as t:
        out = fn(*a)
    return out, t.seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_no_gpu is not None:
        return no_gpu(args.report_no_gpu, args.json)
    if args.report_env_error is not None:
        return env_error(args.report_env_error, args.json)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
