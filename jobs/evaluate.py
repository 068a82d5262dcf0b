"""Evaluate any stage's checkpoint (by MLflow run id) on any manifest, with the same metrics as training.

    python jobs/evaluate.py --run-id 3f2a… --manifest s3://bucket/manifests/cr.parquet --split test
    python jobs/evaluate.py --run-id 3f2a… --manifest data/synthetic/manifest.parquet --domain target --log

Prints OA, AA, macro-F1, κ overall and per cloud bucket (clear < 10 %, partly, cloudy > 90 %); with
``--log`` the evaluation (metrics, result JSON, confusion matrix) is logged to a new MLflow run
that records the evaluated run and the manifest hash.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True, help="MLflow run of a stage (its checkpoint is evaluated)")
    p.add_argument("--manifest", required=True, help="manifest URI to evaluate on")
    p.add_argument("--split", default="test", help="manifest split ('' = all)")
    p.add_argument("--domain", default="", help="manifest domain ('' = all)")
    p.add_argument("--optical", choices=("clear", "cloudy"), default="cloudy")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="data pipeline override, e.g. clouds.mode=simulate")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    p.add_argument("--experiment", default="raypipe")
    p.add_argument("--log", action="store_true", help="log the evaluation to a new MLflow run")
    p.add_argument("--json", help="also write the full result to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import ray
    import ray.data

    from raypipe.config import apply_overrides, from_dict
    from raypipe.data.manifest import content_hash
    from raypipe.data.pipeline import DataConfig, TilePipeline
    from raypipe.errors import ConfigError, RaypipeError
    from raypipe.models import check_model_inputs
    from raypipe.engine.runner import predict
    from raypipe.engine.task import build_task
    from raypipe.tracking import Lineage

    try:
        lineage = Lineage(args.tracking_uri, args.experiment)
        ckpt = lineage.load_checkpoint(args.run_id, field="--run-id")
        spec, extra = ckpt["model_spec"], ckpt.get("extra") or {}
        inputs = extra.get("inputs")  # stated once, by the stage that trained the model, and saved with it
        if inputs not in ("optical", "sar", "both"):
            raise ConfigError("--run-id", f"run {args.run_id}'s checkpoint does not say which inputs its model takes")
        task_name = extra.get("task", "classification")
        data = apply_overrides({"manifest": args.manifest, "split": args.split, "domain": args.domain,
                                "optical": args.optical, "use_sar": inputs != "optical"}, args.set)
        if not ray.is_initialized():
            ray.init(configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        pipe = TilePipeline(from_dict(DataConfig, data, "data"))
        bands = {"optical": pipe.num_optical_bands, "sar": pipe.num_sar_bands}
        check_model_inputs(spec, bands if inputs == "both" else {"input": bands[inputs]}, "checkpoint.model_spec")
        trained_classes = extra.get("classes")
        if trained_classes and list(trained_classes) != pipe.classes:
            raise ConfigError("--manifest", f"class list {pipe.classes} differs from the model's {trained_classes}")
        pred = predict(pipe, spec, ckpt["state_dict"], inputs, task_name, len(pipe.classes))
        if not len(pred) or (pred["label"] < 0).any():
            raise ConfigError("--manifest", "the selected samples have no labels to evaluate against")
        result = build_task(task_name, len(pipe.classes), pipe.classes).evaluate(pred)
        report = pipe.report(len(pred["pred"]))
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"run {args.run_id} on {args.manifest} (split={args.split or 'all'}, domain={args.domain or 'all'}): "
          f"{report['message']}")
    print(f"{'scope':<8} {'n':>6} {'OA':>6} {'AA':>6} {'F1':>6} {'kappa':>6}")
    for scope, r in [("overall", result["overall"]), *result["buckets"].items()]:
        vals = [r.get(k) for k in ("oa", "aa", "macro_f1", "kappa")]
        print(f"{scope:<8} {r['n']:>6} " + " ".join(f"{100 * v:6.1f}" if v is not None else "   n/a" for v in vals))
    if result["overall"].get("absent_classes"):
        print(f"classes absent from this split: {result['overall']['absent_classes']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    if args.log:
        with lineage.pipeline_run(f"evaluate-{args.run_id[:8]}", data,
                                  tags={"raypipe.kind": "evaluation", "raypipe.evaluated_run": args.run_id,
                                        "raypipe.data_hash": content_hash(pipe.frame)}) as run:
            run.log_evaluation(result, prefix="eval", class_names=pipe.classes)
        print(f"logged to MLflow run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
