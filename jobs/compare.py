"""Compare methods on the same data, backbones, epochs and selection rule: one MLflow comparison run,
a table (CSV and Markdown, mean ± std over seeds, oracle rows marked) and two charts.

    python jobs/compare.py --methods source_only,kd_s,tlf,gdl,mtts --seeds 0 1 2 --preset small
    python jobs/compare.py --methods all --preset tiny --seeds 0
    python jobs/compare.py --methods mtts,oracle --data s3://bucket/manifests/sen12ms.parquet \\
        --set data.target_manifest=s3://bucket/manifests/cr.parquet --tracking-uri http://mlflow:5000

``--config`` and ``--set`` apply to every method (a key a method lacks is an error naming it); the
preset's benchmark size, epochs and seeds come after ``--config`` and before ``--set``.
Stages with the same key are trained once (f_S above all) and reused; rerunning after an interruption
trains only what is missing. Outputs under ``--out`` (default ``runs/compare/<name>``):
``comparison.csv``, ``comparison.md``, ``buckets.png`` (accuracy per cloud bucket) and ``coverage.png``
(accuracy against cloud coverage, ten bins), also logged to the comparison run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import LOCAL_RUNTIME_ENV, add_run_options, cli_overrides, prepare_local_ray  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="all", help="comma-separated registered methods, or all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--preset", default="small", help="tiny | small | medium (generated benchmark size, epochs)")
    p.add_argument("--selection", default="last", help="last | val_labels (oracle) | val_objective, every stage")
    p.add_argument("--name", default="", help="comparison name (default compare-<preset>)")
    p.add_argument("--out", default="", help="where the table and charts go (default runs/compare/<name>)")
    add_run_options(p)
    args = p.parse_args(argv)
    local = prepare_local_ray(args.address)
    from raypipe.compare import compare
    from raypipe.engine.report import quiet_library_loggers, setup_logging
    from raypipe.errors import RaypipeError
    from raypipe.methods import load_methods

    registry = load_methods()  # "all": every scene-classification method (CloudSeg segments: its own table)
    methods = ([m for m in registry.names() if registry.get(m).task == "classification"] if args.methods == "all"
               else [m.strip() for m in args.methods.split(",") if m.strip()])
    log_file = setup_logging(args.log_dir, "compare", args.verbose)
    import ray
    import ray.data

    try:
        runtime_env = LOCAL_RUNTIME_ENV if local else None
        ray.init(address=None if local else args.address, configure_logging=False, log_to_driver=args.verbose,
                 runtime_env=runtime_env)
        quiet_library_loggers(args.verbose)
        ray.data.DataContext.get_current().enable_progress_bars = False
        outcome = compare(methods, args.seeds, args.preset, args.selection, cli_overrides(args), args.set,
                          args.out, args.name, config_file=args.config)
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"full log: {log_file}", file=sys.stderr)
        return 2
    print()
    print(outcome.markdown)
    print(f"outputs: {outcome.out_dir} (comparison.csv, comparison.md, buckets.png, coverage.png)")
    print(f"MLflow comparison run {outcome.run_id}; {outcome.seconds:.0f} s; full log: {log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
