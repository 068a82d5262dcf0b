"""What a Ray Tune sweep costs beyond the stages its trials really train, measured on one sweep.

Runs a real sweep (``raypipe.tune.run_sweep``, FIFO so that every trial trains to the end) of MTTS on a
small generated benchmark over the space ``--space`` (default: the stage-1 threshold of both auxiliary
models and IRM's alpha, ``configs/sweeps/mtts_tiny.yaml``), then reads MLflow for what each trial
trained. It prints, from the same run:

* ``sweep_s``: the sweep's wall time, shared stages first, then ``Tuner.fit`` (the best trial's final
  test evaluation is timed apart, ``best_s``);
* ``ideal_s = n_trials × (mean time of the stages a trial really trains) / concurrency``, a stage's
  time being its MLflow run's duration (prepare, Ray Train fit, val evaluation, logging);
* their ratio (target ≤ 1.3: the shared-stage cache and Tune's own overhead);

and checks what the issue asks of a tiny sweep: stage 0 trained once (MLflow), one nested run per
trial, ``best.yaml`` written, and a rerun of it with ``jobs/run.py --config`` reusing every stage.

    .venv/bin/python benchmarks/tune_overhead.py --trials 8 --json /tmp/tune_overhead.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from harness import Timer, emit, run_info

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--space", default=os.path.join(REPO, "configs", "sweeps", "mtts_tiny.yaml"))
    ap.add_argument("--tiles", type=int, default=120, help="tiles per domain of the generated benchmark")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of every stage")
    ap.add_argument("--concurrency", type=int, default=0, help="0 = what the CPUs allow")
    ap.add_argument("--out", default="", help="working folder (default: a temporary one)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # as jobs/tune.py: a loopback-only instance
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    with tempfile.TemporaryDirectory(prefix="tune-overhead-") as tmp:
        work = os.path.abspath(args.out or tmp)
        os.makedirs(work, exist_ok=True)
        os.chdir(work)
        import ray
        from mlflow import MlflowClient

        from raypipe.tune import Sweep, load_space, run_sweep
        from raypipe.tune.sweep import local_runtime_env

        tracking = f"sqlite:///{work}/mlflow.db"
        model = {"kind": "resnet", "depth": 10, "width": 8, "stem": "small", "norm": "group"}
        enc = {k: v for k, v in model.items() if k != "kind"}
        train = {"epochs": args.epochs, "batch_size": 32}
        extra = {"data": {"benchmark": {"out": f"{work}/bench", "tiles": args.tiles, "size": args.size,
                                        "scene_size": 10}},
                 "stages": {**{s: {"model": dict(model), "train": dict(train)} for s in ("source", "aux_optical")},
                            "aux_sar": {"model": {**model, "depth": 10}, "train": dict(train)},
                            "target": {"model": {"kind": "multimodal", "optical": enc, "sar": enc}, "train": dict(train)}},
                 "tracking": {"uri": tracking}, "ray": {"storage_path": f"{work}/ray-train"}}
        sweep = Sweep.build("mtts", load_space(args.space), extra=extra, trials=args.trials, scheduler="fifo",
                            concurrency=args.concurrency, name="tune-overhead", storage=f"{work}/tune")
        ray.init(configure_logging=False, log_to_driver=False, runtime_env=local_runtime_env())
        ray.data.DataContext.get_current().enable_progress_bars = False
        with Timer() as whole:
            outcome = run_sweep(sweep)
        ray.shutdown()

        client = MlflowClient(tracking)
        exp = client.get_experiment_by_name("raypipe")
        stage_runs = client.search_runs([exp.experiment_id], "tags.`raypipe.kind` = 'stage'", max_results=1000)
        trained_by: dict[str, float] = {}  # pipeline run -> seconds of the stages it trained
        per_stage: dict[str, int] = {}
        for r in stage_runs:
            per_stage[r.data.tags["raypipe.stage"]] = per_stage.get(r.data.tags["raypipe.stage"], 0) + 1
            parent = r.data.tags.get("mlflow.parentRunId", "")
            trained_by[parent] = trained_by.get(parent, 0.0) + (r.info.end_time - r.info.start_time) / 1000
        trial_runs = {row["pipeline_run"] for row in outcome.rows if row["pipeline_run"]}
        trial_stage_s = [trained_by.get(p, 0.0) for p in trial_runs]
        n = len(outcome.rows)
        mean_trial = sum(trial_stage_s) / max(len(trial_stage_s), 1)
        ideal = n * mean_trial / outcome.concurrency
        sweep_s = outcome.timings["shared_s"] + outcome.timings["trials_s"]
        nested = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.sweep_run_id}' "
                                    "AND tags.`raypipe.kind` = 'pipeline'", max_results=1000)
        rerun = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "run.py"), "--method", "mtts", "--config",
                                outcome.best_yaml, "--tracking-uri", tracking, "--address", "local"],
                               capture_output=True, text=True, cwd=work, timeout=900)
        reused_line = next((line for line in rerun.stdout.splitlines() if " stages, " in line and "reused" in line), "")
        results = {
            "run": run_info(), "trials": n, "concurrency": outcome.concurrency, "space": args.space,
            "finished": sum(r["status"] == "finished" for r in outcome.rows),
            "sweep_s": round(sweep_s, 1), "shared_s": round(outcome.timings["shared_s"], 1),
            "trials_s": round(outcome.timings["trials_s"], 1), "best_s": round(outcome.timings["best_s"], 1),
            "whole_s": round(whole.seconds, 1),
            "mean_trained_stage_s_per_trial": round(mean_trial, 1), "ideal_s": round(ideal, 1),
            "ratio": round(sweep_s / ideal, 3) if ideal else None,
            "stage_trainings": per_stage, "nested_trial_runs": sum("raypipe.trial_id" in r.data.tags for r in nested),
            "best_yaml": os.path.exists(outcome.best_yaml), "rerun_of_best": reused_line,
            "trained_per_trial": sorted({r["trained"] for r in outcome.rows}),
        }
        text = (f"sweep of {n} trials ({results['finished']} finished), {outcome.concurrency} at a time: "
                f"{sweep_s:.0f} s (shared stages {outcome.timings['shared_s']:.0f} s, trials "
                f"{outcome.timings['trials_s']:.0f} s); best trial on test {outcome.timings['best_s']:.0f} s\n"
                f"stages a trial trains ({', '.join(results['trained_per_trial'])}): {mean_trial:.1f} s per trial; "
                f"ideal {n} x {mean_trial:.1f} / {outcome.concurrency} = {ideal:.0f} s\n"
                f"ratio sweep / ideal: {results['ratio']} (target <= 1.3)\n"
                f"stage trainings in MLflow: {per_stage}; nested trial runs: {results['nested_trial_runs']}; "
                f"best.yaml: {results['best_yaml']}; rerun of best.yaml: {reused_line}")
        emit(results, args.json or None, text=text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
