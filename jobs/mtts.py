"""MTTS + IRM: multi-step transfer from a cloud-free optical source model to an optical + SAR target model.

With no arguments it runs the embedded default: a small generated benchmark (made if absent) on local
Ray, with a local MLflow store in the working directory, all stages, then a results table.

    python jobs/mtts.py
    python jobs/mtts.py --config my.yaml --set stages.target.irm.mode=batch --num-workers 2
    ray job submit --working-dir . -- python jobs/mtts.py --tracking-uri http://mlflow:5000 \\
        --data s3://bucket/manifests/sen12ms.parquet --set data.target_manifest=s3://bucket/manifests/cr.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override one value (repeatable)")
    p.add_argument("--data", help="source manifest URI (default: the generated benchmark)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    p.add_argument("--storage-path", help="Ray Train storage (local folder or s3://…)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers per stage")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL, bf16 autocast")
    p.add_argument("--force-stage", action="append", default=[], metavar="NAME", help="retrain this stage even if a matching run exists")
    p.add_argument("--progress", action="store_true", help="show Ray Data progress bars")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a new local instance)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import ray
    import ray.data

    from raypipe.errors import RaypipeError
    from raypipe.stages.config import resolve
    from raypipe.stages.mtts import run_mtts

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
    if args.force_stage:
        extra["force_stages"] = args.force_stage
    try:
        cfg = resolve(args.config, args.set, extra)
        ray.init(address=args.address or cfg.ray.address or None, configure_logging=False)
        # Per-epoch progress is logged by the stages; per-block bars only help when watching a terminal.
        ray.data.DataContext.get_current().enable_progress_bars = args.progress and sys.stderr.isatty()
        result = run_mtts(cfg)
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"MTTS on {cfg.data.source_manifest or cfg.data.benchmark.out}  (accuracy %, target test split)")
    print(result.table)
    reused = [s for s, o in result.stages.items() if o.reused]
    print(f"\n{len(result.stages)} stages, {len(reused)} reused {reused if reused else ''}; {result.seconds:.1f} s")
    print(f"MLflow parent run {result.parent_run_id}; browse with:\n  mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
