"""Run any registered method end to end: its stages on Ray Train, lineage and reuse in MLflow, a table.

With no options beyond ``--method`` it runs the method's embedded default: a small generated benchmark
(made if absent) on local Ray, with a local MLflow store in the working directory.

    python jobs/run.py --list
    python jobs/run.py --method kd_s
    python jobs/run.py --method mtts --config my.yaml --set stages.target.irm.mode=batch --num-workers 2
    ray job submit --working-dir . -- python jobs/run.py --method mtts --tracking-uri http://mlflow:5000 \\
        --data s3://bucket/manifests/sen12ms.parquet --set data.target_manifest=s3://bucket/manifests/cr.parquet

Every option is a config key: ``--config FILE.yaml`` and repeated ``--set key.path=value`` override the
method's defaults; the whole configuration is validated, naming the dotted field, before anything trains.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_run_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every job shares: the base configuration and where it runs (jobs/tune.py and
    jobs/compare.py add theirs to these)."""
    p.add_argument("--config", help="YAML file with config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override one value (repeatable)")
    p.add_argument("--data", help="source manifest URI (default: the generated benchmark)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    p.add_argument("--storage-path", help="Ray Train storage (local folder or s3://…)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers per stage")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL, bf16 autocast")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a new local instance)")
    p.add_argument("--log-dir", default=os.path.join("runs", "logs"), help="where the full log goes (default: runs/logs)")
    p.add_argument("--verbose", action="store_true", help="also show Ray's and the libraries' own output here")
    return p


def parser(method: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if method is None:
        p.add_argument("--method", help="a registered method (see --list)")
        p.add_argument("--list", action="store_true", help="list the registered methods and exit")
    add_run_options(p)
    p.add_argument("--force-stage", action="append", default=[], metavar="NAME", help="retrain this stage even if a matching run exists")
    return p


def cli_overrides(args) -> dict:
    extra: dict = {"ray": {}, "tracking": {}, "data": {}}
    if args.data:
        extra["data"]["source_manifest"] = args.data
    if args.tracking_uri:
        extra["tracking"]["uri"] = args.tracking_uri
    if args.storage_path:
        extra["ray"]["storage_path"] = args.storage_path
    if args.num_workers:
        extra["ray"]["num_workers"] = args.num_workers
    if args.use_gpu:
        extra["ray"]["use_gpu"] = True
    if getattr(args, "force_stage", None):
        extra["force_stages"] = args.force_stage
    return extra


def prepare_local_ray(address: str | None) -> bool:
    """Whether this job starts its own local Ray instance; if so, set what Ray reads before it is
    imported. Such an instance binds 127.0.0.1 only (GCS, raylet, workers, agents, metrics; docs/
    reliability.md, "Listeners"), and its Ray Train controller polls its workers every 0.5 s instead of
    2 s, so a stage notices its last epoch sooner (docs/benchmarks.md, "Stage start-up"); clusters keep
    Ray's defaults."""
    local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    return local


# a Ray instance a job starts serves DDP's rendezvous store on loopback too (raypipe.engine.netguard)
LOCAL_RUNTIME_ENV = {"worker_process_setup_hook": "raypipe.engine.netguard.bind_store_to_loopback"}


def main(argv: list[str] | None = None, method: str | None = None) -> int:
    args = parser(method).parse_args(argv)
    prepare_local_ray(args.address)
    from raypipe.errors import RaypipeError
    from raypipe.methods import load_methods

    methods = load_methods()
    if method is None and (args.list or not args.method):
        width = max(len(n) for n in methods.names())
        print("registered methods (python jobs/run.py --method NAME):")
        for name, m in methods.items():
            print(f"  {name:<{width}}  {m.description}")
        return 0 if args.list else 2
    name = method or args.method
    try:
        m = methods.get(name, "--method")
        from raypipe.engine import resolve

        cfg = resolve(m, args.config, args.set, cli_overrides(args))  # fails here, naming the field
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from raypipe.engine.report import Console, quiet_library_loggers, setup_logging

    log_file = setup_logging(args.log_dir, name, args.verbose)
    import ray
    import ray.data

    from raypipe.engine.run import run_method

    try:
        address = args.address or cfg.ray.address or None
        local = address in (None, "local") and not os.environ.get("RAY_ADDRESS")
        runtime_env = LOCAL_RUNTIME_ENV if local else None
        ray.init(address=address, configure_logging=False, log_to_driver=args.verbose, runtime_env=runtime_env)
        quiet_library_loggers(args.verbose)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = args.verbose and sys.stderr.isatty()
        ctx.print_on_execution_start = args.verbose
        result = run_method(m, cfg, Console())
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"full log: {log_file}", file=sys.stderr)
        return 2
    print()
    from raypipe.engine.report import oracle_summary

    print(f"{name} on {cfg.data.source_manifest or cfg.data.benchmark.out}  (%, test split)")
    what = args.config or f"{name} embedded default" + (f": {m.default_note}" if m.default_note else "")
    print(f"configuration: {what}{' with ' + ' '.join(args.set) if args.set else ''}")
    print(result.table)
    print(oracle_summary(m, result.stages))
    reused = [s for s, o in result.stages.items() if o.reused]
    print(f"\n{len(result.stages)} stages, {len(reused)} reused{' ' + str(reused) if reused else ''}; "
          f"{result.seconds:.1f} s")
    print(f"MLflow parent run {result.parent_run_id}; browse with:\n"
          f"  mlflow ui --host 127.0.0.1 --backend-store-uri {result.tracking_uri}")
    print(f"full log: {log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
