"""Can a filter on f_S's logits keep cloudy tiles out of the pseudo labels? Run after
``benchmarks/mtts_benchmark.py`` (same ``--out``, seeds and data settings).

    python benchmarks/filter_ood.py --seeds 0 1 2 --tiles 1000 --size 32

For each seed's newest finished pipeline run, f_S (the source stage's checkpoint, from MLflow) runs on
the target training split, the split its pseudo labels are made for. Printed per seed and as the
mean: for each logit score a filter could threshold (max-softmax and margin, the two MTTS rules;
negative free energy −E = logsumexp z, a standard out-of-distribution score; the logit norm; negative
entropy), the AUROC of "clear tile scores above a fully cloudy tile" (0.5 = no separation, < 0.5 =
clouds look *more* in-distribution), and, for the max-softmax rule at each of ``--thresholds``, the
pass rate and the pseudo-label accuracy of what passes, per cloud bucket. Uses target labels, for this analysis
only. ``--json PATH`` also writes the per-seed values and the table as raw JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch

from harness import emit, run_info

BUCKETS = ("clear", "partly", "cloudy")


def scores(logits: torch.Tensor) -> dict[str, np.ndarray]:
    """Each candidate filter score per sample (higher = more confident); the two MTTS rules are
    raypipe's own ``filter_scores``."""
    from raypipe.methods import filter_scores

    p = logits.softmax(1)
    out = {rule: filter_scores(logits, rule) for rule in ("max_softmax", "margin")}
    out.update(neg_energy=torch.logsumexp(logits, 1), logit_norm=logits.norm(dim=1),
               neg_entropy=(p * p.clamp_min(1e-12).log()).sum(1))
    return {k: v.numpy() for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tiles", type=int, default=1200)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.8, 0.9, 0.95, 0.99],
                   help="max-softmax thresholds to report (0.6 is the MTTS default)")
    p.add_argument("--out", default="runs/mtts-benchmark")
    p.add_argument("--name", default="bench", help="the mtts_benchmark.py --name whose f_S to analyse")
    p.add_argument("--json", default="", help="also write the per-seed values and the table as raw JSON")
    args = p.parse_args()

    import ray

    from raypipe.methods import auroc
    from raypipe.metrics.classification import cloud_buckets
    from raypipe.engine import TARGET_TRAIN, resolve
    from raypipe.engine import runner
    from raypipe.engine.data import build_data
    from raypipe.methods import get_method
    from raypipe.tracking import Lineage

    ray.init(configure_logging=False, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    out = os.path.abspath(args.out)
    table: dict[str, list[float]] = {}
    for seed in args.seeds:
        cfg = resolve(get_method("mtts"), overrides=[f"data.benchmark.out={out}/data-seed{seed}", f"data.benchmark.tiles={args.tiles}",
                                 f"data.benchmark.size={args.size}", f"data.benchmark.seed={seed}",
                                 f"tracking.uri=sqlite:///{out}/mlflow.db"])
        lineage = Lineage(cfg.tracking.uri, cfg.tracking.experiment)
        runs = lineage.client.search_runs(
            [lineage.experiment_id], f"tags.`raypipe.pipeline` = '{args.name}-seed{seed}' AND attributes.status = 'FINISHED'",
            max_results=1, order_by=["attributes.start_time DESC"])
        if not runs:
            raise SystemExit(f"no finished pipeline run {args.name}-seed{seed} in {cfg.tracking.uri}: run mtts_benchmark.py first")
        source_run = lineage.stage_runs(runs[0].info.run_id)["source"]
        ckpt = lineage.load_checkpoint(source_run, field="source")
        pred = runner.predict(build_data(cfg).pipe(TARGET_TRAIN, sar=True), ckpt["model_spec"], ckpt["state_dict"],
                              "optical")
        logits = torch.from_numpy(pred["logits"])
        bucket = cloud_buckets(pred["cloud_fraction"])
        correct = pred["pred"] == pred["label"]
        print(f"seed {seed}: f_S = run {source_run}, {len(bucket)} target training tiles "
              f"({', '.join(f'{b} {int((bucket == b).sum())}' for b in BUCKETS)})")
        per_sample = scores(logits)
        for name, s in per_sample.items():
            a = auroc(s[bucket == "clear"], s[bucket == "cloudy"])
            table.setdefault(f"AUROC clear>cloudy, {name}", []).append(a)
            print(f"  AUROC clear > cloudy, {name:<12} {a if a is None else round(a, 3)}")
        for tau in args.thresholds:
            keep = per_sample["max_softmax"] >= tau
            for b in BUCKETS:
                sel = bucket == b
                rate, acc = keep[sel].mean(), correct[sel & keep].mean() if (sel & keep).any() else float("nan")
                table.setdefault(f"max-softmax >= {tau}: {b} pass rate", []).append(rate)
                table.setdefault(f"max-softmax >= {tau}: {b} accuracy of passed pseudo labels", []).append(acc)
                print(f"  max-softmax >= {tau}: {b:<7} pass rate {rate:.3f}, accuracy of passed pseudo labels {acc:.3f}")
    lines = [f"\nmean ± std over seeds {args.seeds}", "| quantity | value |\n|---|---|"]
    summary = {}
    for k, v in table.items():
        v = [float(x) for x in v if x is not None and np.isfinite(x)]  # undefined where a bucket is empty
        if not v:
            lines.append(f"| {k} | n/a (nothing passed) |")
            summary[k] = None
            continue
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        lines.append(f"| {k} | {statistics.mean(v):.3f} ± {sd:.3f} (n = {len(v)}) |")
        summary[k] = {"mean": statistics.mean(v), "std": sd, "n": len(v)}
    emit({"benchmark": "filter_ood", "args": vars(args), "run": run_info(), "per_seed": table, "summary": summary},
         args.json or None, text="\n".join(lines))


if __name__ == "__main__":
    main()
