"""A comparison's per-stage fixed cost: the training loop in a Ray Train worker group vs in the driver.

One ``jobs/compare.py`` comparison (``--methods``, default source_only,kd_s,tlf; seed 0; preset small),
run twice in one go on the same generated benchmark (made once, before either side), each side in its
own folder, MLflow store and Ray instance:

* ``workers``: ``--set ray.training=workers`` (every stage starts a Ray Train worker group: controller
  process, placement group, worker process), the default until 2026-12-07;
* ``driver``: ``--set ray.training=auto``, which on this one-node CPU machine runs each stage's loop in
  the driver (Ray Train's local mode).

Per trained stage (read from the side's MLflow store): the stage run's wall time, and the time its
epochs trained (the sum of ``train/epoch_s``). ``fixed_s`` = wall − epochs: what a stage costs beyond
its training epochs (worker group start and tear-down, the first pass over its splits, validation,
checkpoints, test evaluation). Both sides train the same stages on the same data with the same
seeds; their accuracies are printed too, as a check that the two sides did the same work.

    python benchmarks/compare_startup.py [--methods source_only,kd_s,tlf] [--preset small] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import emit, run_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIDES = {"workers": "workers", "driver": "auto"}


def stage_costs(tracking_uri: str) -> list[dict]:
    """Every trained stage run of the store: stage, wall, epoch time, fixed cost, test accuracy."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    rows = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], "tags.`raypipe.kind` = 'stage'"):
            wall = (run.info.end_time - run.info.start_time) / 1000.0
            epochs = client.get_metric_history(run.info.run_id, "train/epoch_s")
            trained = sum(m.value for m in epochs)
            acc = {k: round(v, 4) for k, v in run.data.metrics.items() if k.endswith("_test/oa")}
            rows.append({"stage": run.data.tags.get("raypipe.stage"), "run_name": run.info.run_name,
                         "wall_s": round(wall, 2), "epochs": len(epochs), "epochs_s": round(trained, 2),
                         "fixed_s": round(wall - trained, 2), "test_oa": acc})
    return sorted(rows, key=lambda r: r["run_name"] or "")


def run_side(side: str, work: Path, bench: Path, methods: str, preset: str) -> dict:
    d = work / side
    d.mkdir()
    uri = f"sqlite:///{d}/mlflow.db"
    cmd = [sys.executable, str(ROOT / "jobs" / "compare.py"), "--methods", methods, "--seeds", "0",
           "--preset", preset, "--tracking-uri", uri, "--storage-path", str(d / "ray-train"), "--out", str(d / "out"),
           "--set", f"data.benchmark.out={bench}", "--set", f"ray.training={SIDES[side]}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{side}: jobs/compare.py failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    stages = stage_costs(uri)
    fixed = [s["fixed_s"] for s in stages]
    return {"side": side, "wall_s": round(wall, 1), "stages_trained": len(stages),
            "fixed_s_mean": round(statistics.mean(fixed), 2), "fixed_s_median": round(statistics.median(fixed), 2),
            "epochs_s_total": round(sum(s["epochs_s"] for s in stages), 1), "stages": stages,
            "console_tail": out.stdout.splitlines()[-25:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="source_only,kd_s,tlf")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from raypipe.compare import PRESETS
    from raypipe.engine import resolve
    from raypipe.engine.data import ensure_benchmark
    from raypipe.methods import get_method

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench = work / "bench"
        cfg = resolve(get_method("source_only"),
                      extra={"data": {**PRESETS[args.preset]["data"],
                                      "benchmark": {**PRESETS[args.preset]["data"]["benchmark"], "out": str(bench)}}})
        t0 = time.perf_counter()
        ensure_benchmark(cfg)
        generate_s = time.perf_counter() - t0
        sides = {side: run_side(side, work, bench, args.methods, args.preset) for side in SIDES}
    w, d = sides["workers"], sides["driver"]
    figures = {"methods": args.methods, "preset": args.preset, "generate_s": round(generate_s, 1),
               "workers": {k: w[k] for k in ("wall_s", "stages_trained", "fixed_s_mean", "fixed_s_median", "epochs_s_total")},
               "driver": {k: d[k] for k in ("wall_s", "stages_trained", "fixed_s_mean", "fixed_s_median", "epochs_s_total")},
               "fixed_driver_over_workers": round(d["fixed_s_mean"] / w["fixed_s_mean"], 3),
               "wall_driver_over_workers": round(d["wall_s"] / w["wall_s"], 3)}
    lines = [f"comparison {args.methods}, preset {args.preset}, seed 0; benchmark generated once in {generate_s:.1f} s"]
    for side in (w, d):
        lines.append(f"  {side['side']:8s} wall {side['wall_s']:7.1f} s, {side['stages_trained']} stages trained, "
              f"fixed cost per stage {side['fixed_s_mean']:.1f} s (median {side['fixed_s_median']:.1f}), "
              f"epochs {side['epochs_s_total']:.1f} s in all")
        for s in side["stages"]:
            lines.append(f"      {s['run_name']}: wall {s['wall_s']:.1f} s = epochs {s['epochs_s']:.1f} s "
                  f"({s['epochs']}) + fixed {s['fixed_s']:.1f} s; {s['test_oa']}")
    lines.append(f"fixed cost per stage, driver / workers: {figures['fixed_driver_over_workers']:.3f} (target <= 0.5); "
          f"wall: {figures['wall_driver_over_workers']:.3f}")
    emit({"benchmark": "compare_startup", "figures": figures, "sides": sides, "run": run_info()}, args.json or None,
         text="\n".join(lines))


if __name__ == "__main__":
    main()
