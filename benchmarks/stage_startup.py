"""A stage's fixed cost: what ``fit`` + evaluation spend when there is almost nothing to train.

Both sides in one run, each in its own local Ray instance (a child process: the Ray Train controller
reads its poll interval from the environment it starts in), rotated over ``--rounds``:

* ``before``: the settings of 2026-12-01: streaming every pass from storage (``data.pipeline.cache:
  off``), evaluation in a Ray Data actor pool (``ray.inference: actors``), the controller polling
  every 2 s (Ray's default);
* ``after``: the decoded-split cache, driver-side inference for small CPU splits, the 0.5 s poll that
  ``jobs/run.py`` sets for the Ray instance it starts, the training loop in a Ray Train worker group
  (``ray.training: workers``: the default of 2026-12-02 to 2026-12-07);
* ``driver``: the same, with the training loop in the calling process (``ray.training: driver``, Ray
  Train's local mode: what ``auto`` picks for one CPU worker on one node, today's default).

Each child trains ``--stages`` one-epoch stages and one three-epoch stage of the same tiny job
(a 40-tile generated benchmark, 16 px, a ResNet-10 of width 4: the compute is negligible), and
evaluates each on the val split. Per stage: ``fixed_s`` = fit(1 epoch) + evaluation, the cost every
stage of every method pays; ``per_epoch_s`` = (fit(3) − fit(1)) / 2, the cost of one more epoch.

    python benchmarks/stage_startup.py [--rounds 1] [--stages 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import emit, repeat_rotating, run_info  # noqa: E402

MODES = {
    "before": {"cache": "off", "inference": "actors", "training": "workers", "env": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0"}},
    "after": {"cache": "auto", "inference": "auto", "training": "workers",
              "env": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}},
    "driver": {"cache": "auto", "inference": "auto", "training": "driver",
               "env": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}},
}
SPEC = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group",
        "in_channels": 10, "num_classes": 10}


def child(mode: str, work: Path, stages: int) -> dict:
    import ray

    from raypipe.config import from_dict
    from raypipe.data.pipeline import DataConfig, TilePipeline
    from raypipe.data.prepare import prepare
    from raypipe.engine.config import RayConfig, TrainConfig
    from raypipe.engine.runner import StageJob, fit, predict
    from raypipe.objectives.supervised import Supervised
    from raypipe.synthetic import generate

    m = MODES[mode]
    manifest = work / "m.parquet"
    if not manifest.exists():
        generate(str(work / "b"), tiles=40, size=16, seed=0, scene_size=10, quiet=True)
        prepare("synthetic", str(work / "b"), str(manifest))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init_s = time.perf_counter() - t0

    def pipe(split):
        cfg = {"manifest": str(manifest), "domain": "source", "split": split, "optical": "clear",
               "use_sar": False, "clouds": {"mode": "none"}, "rows_per_block": 4, "cache": m["cache"]}
        return TilePipeline(from_dict(DataConfig, cfg, "data"))

    train_pipe, val_pipe = pipe("train"), pipe("val")  # shared by the stages, as a method's views are
    ray_cfg = RayConfig(num_workers=1, storage_path=str(work / f"runs-{mode}-{time.time_ns()}"),
                        inference=m["inference"], training=m["training"])
    rows = []
    for i in range(stages + 1):
        epochs = 3 if i == stages else 1
        job = StageJob("s", Supervised(None, inputs="optical"), SPEC, TrainConfig(epochs=epochs, batch_size=4),
                       train_pipe, val_pipe, {}, "classification", 10, [str(c) for c in range(10)])
        t = time.perf_counter()
        state, _ = fit(job, ray_cfg, f"{mode}-{i}")
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        predict(val_pipe, SPEC, state, "optical", where=ray_cfg.inference)
        rows.append({"epochs": epochs, "fit_s": fit_s, "evaluate_s": time.perf_counter() - t})
    ray.shutdown()
    one = [r for r in rows if r["epochs"] == 1]
    three = rows[-1]
    fixed = [r["fit_s"] + r["evaluate_s"] for r in one]
    return {"mode": mode, "ray_init_s": init_s, "stages": rows,
            "fixed_s": sum(fixed) / len(fixed), "fit_1_epoch_s": sum(r["fit_s"] for r in one) / len(one),
            "evaluate_s": sum(r["evaluate_s"] for r in one) / len(one),
            "per_epoch_s": (three["fit_s"] - one[-1]["fit_s"]) / 2}


def run_child(mode: str, work: Path, stages: int) -> dict:
    env = {**os.environ, **MODES[mode]["env"], "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--work", str(work), "--stages", str(stages)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--stages", type=int, default=2, help="one-epoch stages per child")
    ap.add_argument("--json", default="")
    ap.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.work), args.stages)))
        return
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        runs: dict[str, list] = {m: [] for m in MODES}

        def side(mode):
            return lambda: runs[mode].append(run_child(mode, work, args.stages))

        repeat_rotating({m: side(m) for m in MODES}, rounds=args.rounds)
    figures = {}
    for mode, rs in runs.items():
        figures[mode] = {k: round(sorted(r[k] for r in rs)[len(rs) // 2], 2)
                         for k in ("fixed_s", "fit_1_epoch_s", "evaluate_s", "per_epoch_s", "ray_init_s")}
    figures["fixed_after_over_before"] = round(figures["after"]["fixed_s"] / figures["before"]["fixed_s"], 3)
    figures["fixed_driver_over_after"] = round(figures["driver"]["fixed_s"] / figures["after"]["fixed_s"], 3)
    figures["fixed_driver_over_before"] = round(figures["driver"]["fixed_s"] / figures["before"]["fixed_s"], 3)
    emit({"benchmark": "stage_startup", "figures": figures, "runs": runs, "run": run_info()}, args.json or None)


if __name__ == "__main__":
    main()
