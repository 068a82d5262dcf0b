"""Sweep a method's hyper-parameters with Ray Tune: each trial is the method's pipeline with the trial's
values under the dotted config paths of ``--set``; stages a trial does not change are reused from MLflow.

    python jobs/tune.py --method mtts --space configs/sweeps/mtts_filter.yaml --trials 8
    python jobs/tune.py --method mtts --space configs/sweeps/mtts_irm.yaml --trials 24 --scheduler asha \\
        --set data.benchmark.tiles=1200 --concurrency 4 --baseline
    python jobs/tune.py --method mtts --space configs/sweeps/mtts_filter.yaml --resume   # after the driver died
    python jobs/run.py --method mtts --config runs/tune/mtts-mtts_filter/best.yaml        # reuses every stage

The shared upstream stages are trained once before the trials start. Trials are evaluated on the
target **val** split only (``--metric val_labels``: target val accuracy, an oracle selection, marked
so; ``val_objective``: the last stage's own loss on val, label-free); the best trial is then evaluated
on test, once. Outputs: ``trials.csv``, ``trials.png`` and ``best.yaml`` under ``--out`` (default: the
sweep's Tune folder), also logged to the sweep's MLflow run, with every trial as a nested run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import add_run_options, cli_overrides, prepare_local_ray  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help="a registered method (python jobs/run.py --list)")
    p.add_argument("--space", required=True, help="search space YAML (configs/sweeps/*.yaml)")
    p.add_argument("--trials", type=int, default=8, help="trials (random / optuna; grid runs its grid)")
    p.add_argument("--search", default="random", help="random | grid | optuna (pip install 'raypipe[optuna]')")
    p.add_argument("--scheduler", default="asha", help="asha (stops bad trials early) | fifo")
    p.add_argument("--metric", default="val_labels", help="val_labels (oracle) | val_objective (label-free)")
    p.add_argument("--concurrency", type=int, default=0, help="trials at once (default: what the CPUs allow)")
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--seed", type=int, default=0, help="the search's seed")
    p.add_argument("--name", default="", help="sweep name (default: <method>-<space file>)")
    p.add_argument("--tune-storage", default="", help="where Tune keeps the sweep (default: runs/tune)")
    p.add_argument("--out", default="", help="where trials.csv, trials.png, best.yaml go (default: the sweep folder)")
    p.add_argument("--resume", action="store_true", help="continue the sweep of this name after its driver died")
    p.add_argument("--baseline", action="store_true", help="also evaluate the base configuration on test")
    add_run_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    local = prepare_local_ray(args.address)
    # Tune's own console table and banners stay off (verbose=0 in the classic reporter): the sweep
    # prints a line per trial instead (raypipe.tune.sweep._Progress)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from raypipe.errors import RaypipeError
    from raypipe.tune import Sweep, load_space, run_sweep
    from raypipe.tune.sweep import local_runtime_env

    try:
        sweep = Sweep.build(args.method, load_space(args.space), config_file=args.config, overrides=args.set,
                            extra=cli_overrides(args), trials=args.trials, search=args.search,
                            scheduler=args.scheduler, concurrency=args.concurrency, metric=args.metric,
                            name=args.name, storage=args.tune_storage, seed=args.seed,
                            grace_period=args.grace_period)
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from raypipe.engine.report import quiet_library_loggers, setup_logging

    log_file = setup_logging(args.log_dir, f"tune-{sweep.name}", args.verbose)
    import ray
    import ray.data

    runtime_env = local_runtime_env() if local else None
    try:
        ray.init(address=None if local else args.address, configure_logging=False, log_to_driver=args.verbose,
                 runtime_env=runtime_env)
        quiet_library_loggers(args.verbose)
        ray.data.DataContext.get_current().enable_progress_bars = False
        outcome = run_sweep(sweep, resume=args.resume, out_dir=args.out, baseline=args.baseline)
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"full log: {log_file}", file=sys.stderr)
        return 2
    finished = sum(r["status"] == "finished" for r in outcome.rows)
    stopped = sum(r["status"] == "stopped" for r in outcome.rows)
    errors = sum(r["status"] == "error" for r in outcome.rows)
    print(f"\n{len(outcome.rows)} trials: {finished} finished, {stopped} stopped early, {errors} failed; "
          f"{outcome.seconds:.0f} s")
    if outcome.best is None:
        print("no trial finished: no best configuration")
        return 1
    b = outcome.best
    print(f"best trial {b['trial_id']}: {sweep.metric_key} {b['metric']:.4f} on target val"
          f"{' (oracle selection: target val labels)' if sweep.oracle else ''}")
    for k, v in b["values"].items():
        print(f"  {k} = {v}")
    print(f"\nbest configuration on the target test split (accuracy %):\n{outcome.best_table}")
    if outcome.default_table:
        print(f"\nbase configuration on the target test split:\n{outcome.default_table}")
    print(f"\nbest.yaml: {outcome.best_yaml}  (python jobs/run.py --method {sweep.method} --config {outcome.best_yaml})")
    print(f"trials: {os.path.join(outcome.out_dir, 'trials.csv')}, plot {os.path.join(outcome.out_dir, 'trials.png')}")
    print(f"MLflow sweep run {outcome.sweep_run_id}; full log: {log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
