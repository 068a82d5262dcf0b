"""Training throughput of one stage under Ray Train (1 worker) vs a plain PyTorch loop, same run.

Both sides train the same model (the default source model, sized by --width/--depth) with the same
objective, optimiser, batch size and torch thread count on the same preprocessed tiles (the Ray
Data pipeline's output, materialised once), so the difference is what Ray Train adds: the DDP
wrapper, the dataset shard iterator, per-epoch reporting and checkpointing. Steady-state samples/s
is measured per epoch after a warm-up epoch; start-up (worker group, process group) is reported
separately. ``--json PATH`` also writes the figures as raw JSON.

    python benchmarks/train_throughput.py --tiles 512 --size 64 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from harness import Timer, emit, run_info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=512, help="tiles per domain in the generated benchmark")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="epochs per side (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", default="", help="also write the figures as raw JSON to this file")
    args = p.parse_args()

    import ray
    import torch

    from raypipe.config import from_dict
    from raypipe.data.pipeline import DataConfig, TilePipeline, to_torch
    from raypipe.data.prepare import prepare
    from raypipe.synthetic import generate
    from raypipe.models import build_model
    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import StageJob, fit
    from raypipe.objectives import Supervised

    work = tempfile.mkdtemp(prefix="train-bench-")
    generate(os.path.join(work, "b"), tiles=args.tiles, size=args.size, seed=0, scene_size=32, quiet=True)
    prepare("synthetic", os.path.join(work, "b"), os.path.join(work, "m.parquet"))
    ray.init(num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = from_dict(DataConfig, {"manifest": os.path.join(work, "m.parquet"), "domain": "source", "split": "train",
                                 "optical": "clear", "use_sar": False, "clouds": {"mode": "none"}}, "data")
    pipe = TilePipeline(cfg)
    data = pipe.dataset().materialize()  # both sides train on identical, already-decoded tiles
    n = data.count()
    spec = {"kind": "resnet", "depth": args.depth, "width": args.width, "stem": "small",
            "in_channels": pipe.num_optical_bands, "num_classes": len(pipe.classes)}
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, schedule="constant")
    print(f"{n} training tiles of {args.size}x{args.size}, ResNet-{args.depth} width {args.width}, "
          f"batch {args.batch_size}, {args.threads} torch threads, {args.epochs} epochs per side")

    # --- plain PyTorch loop ------------------------------------------------------------------------
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    objective = Supervised(None, inputs="optical")
    whole = to_torch(data.take_batch(batch_size=n, batch_format="numpy"))
    plain = []
    for epoch in range(args.epochs):
        model.train()
        seen = 0
        with Timer() as epoch_time:
            order = torch.randperm(n)  # shuffled every epoch, as the Ray Train side is (train.shuffle_buffer)
            for i in range(0, n - args.batch_size + 1, args.batch_size):
                idx = order[i:i + args.batch_size]
                batch = {"optical": whole["optical"][idx], "label": whole["label"][idx]}
                loss, _ = objective.loss(model, {}, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(idx)
        plain.append(seen / epoch_time.seconds)

    # --- the same stage under Ray Train ------------------------------------------------------------
    class Materialized:  # a TilePipeline stand-in whose dataset is the materialised one
        def __init__(self, ds):
            self._ds = ds

        def dataset(self):
            return self._ds

    job = StageJob("source", objective, spec, train, Materialized(data), Materialized(data.limit(64).materialize()),
                   {}, "classification", len(pipe.classes), pipe.classes)
    history = []

    class Handle:  # collects the rank-0 worker's per-epoch metrics through a Ray actor
        pass

    collector = ray.remote(num_cpus=0)(_Collector).remote()
    with Timer() as fit_time:
        fit(job, RayConfig(num_workers=1, cpus_per_worker=args.threads, storage_path=os.path.join(work, "runs")),
            f"bench-{int(time.time())}", run_handle=_ActorHandle(collector))
    wall = fit_time.seconds
    history = ray.get(collector.get.remote())
    ray_sps = [h["train/samples_per_s"] for h in history]
    steady_plain = statistics.median(plain[1:])
    steady_ray = statistics.median(ray_sps[1:])
    overhead = 1 - steady_ray / steady_plain
    train_time = sum(n / x for x in ray_sps)
    text = "\n".join([
        f"plain PyTorch loop   samples/s per epoch: {', '.join(f'{x:.1f}' for x in plain)}",
        f"Ray Train (1 worker) samples/s per epoch: {', '.join(f'{x:.1f}' for x in ray_sps)}",
        f"steady state (median of epochs 2..{args.epochs}): plain {steady_plain:.1f}, Ray Train {steady_ray:.1f} "
        f"samples/s -> overhead {100 * overhead:.1f} % (target <= 10 %)",
        f"Ray Train wall time {wall:.1f} s for {args.epochs} epochs, of which start-up, evaluation and "
        f"checkpointing {wall - train_time:.1f} s"])
    emit({"benchmark": "train_throughput", "args": vars(args), "run": run_info(), "n": n,
          "plain_samples_per_s": plain, "ray_samples_per_s": ray_sps, "steady_plain": steady_plain,
          "steady_ray": steady_ray, "overhead": overhead, "ray_wall_s": wall,
          "ray_overhead_s": wall - train_time}, args.json or None, text=text)


class _Collector:
    def __init__(self):
        self.items = []

    def add(self, metrics):
        self.items.append(metrics)

    def get(self):
        return self.items


class _ActorHandle:
    """Stands in for an MLflow RunHandle: the loop's per-epoch metrics go to a collector actor."""

    def __init__(self, actor):
        self.actor = actor

    def log_metrics(self, metrics, step=None):
        import ray

        ray.get(self.actor.add.remote(dict(metrics)))


if __name__ == "__main__":
    main()
