"""CloudSeg against its references on the generated segmentation benchmark, over seeds.

For each seed, the embedded default of ``jobs/cloudseg.py`` (or ``--config``) with the benchmark's
generation seed and every stage's training seed set to it, in its own benchmark folder; then per table
row the test mIoU / OA for all, cloud-free and cloudy pixels, and the mean and spread over seeds. It
prints one JSON document (and writes it to ``--json``). Results are on the *generated* benchmark, never
the paper's numbers.

    python benchmarks/cloudseg_seeds.py --layout m3m-cr --seeds 0 1 2 --json m3m.json
    python benchmarks/cloudseg_seeds.py --layout whu-opt-sar --seeds 0 1 2 --json whu.json

Run it in a scratch directory: it writes data/, mlflow.db and runs/ there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jobs"))

LAYOUT_CONFIG = {"m3m-cr": None, "whu-opt-sar": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                             "configs", "cloudseg_whu.yaml")}


def row_metrics(res: dict) -> dict:
    o, px = res["overall"], res.get("pixels", {})
    return {"miou": o.get("miou"), "oa": o.get("oa"), "maa": o.get("aa"),
            "clear_px_miou": px.get("clear", {}).get("miou"), "cloudy_px_miou": px.get("cloudy", {}).get("miou"),
            "cloudy_px_oa": px.get("cloudy", {}).get("oa"), "cloudy_px_n": px.get("cloudy", {}).get("n"),
            "pixels_n": o.get("n")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=sorted(LAYOUT_CONFIG), default="m3m-cr")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", help="YAML overrides (default: the layout's embedded default / configs/cloudseg_whu.yaml)")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", help="also write the JSON here")
    args = p.parse_args(argv)

    from run import LOCAL_RUNTIME_ENV, prepare_local_ray

    prepare_local_ray(None)
    import ray

    from raypipe.engine import resolve
    from raypipe.engine.report import Console, setup_logging
    from raypipe.engine.run import run_method
    from raypipe.methods import get_method

    method = get_method("cloudseg")
    setup_logging(os.path.join("runs", "logs"), f"cloudseg-seeds-{args.layout}")
    ray.init(configure_logging=False, log_to_driver=False, runtime_env=LOCAL_RUNTIME_ENV)
    config = args.config or LAYOUT_CONFIG[args.layout]
    runs = []
    for seed in args.seeds:
        overrides = [f"data.benchmark.seed={seed}", f"data.benchmark.out=data/{args.layout}-seed{seed}",
                     *(f"stages.{s.name}.train.seed={seed}" for s in method.stages), *args.set]
        cfg = resolve(method, config, overrides)
        t0 = time.perf_counter()
        result = run_method(method, cfg, Console())
        print(result.table, flush=True)
        rows = {r.label: row_metrics(result.stages[r.stage].evaluations[r.prefix]) for r in method.table}
        runs.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
                     "oracle": {s: list(o.oracle) for s, o in result.stages.items()},
                     "parent_run_id": result.parent_run_id})
    summary = {}
    for label in runs[0]["rows"]:
        summary[label] = {}
        for k in ("miou", "clear_px_miou", "cloudy_px_miou", "cloudy_px_oa"):
            vals = [r["rows"][label][k] for r in runs if r["rows"][label][k] is not None]
            if vals:
                mean = sum(vals) / len(vals)
                sd = (sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
                summary[label][k] = {"mean": round(mean, 4), "sd": round(sd, 4), "values": [round(v, 4) for v in vals]}
    doc = {"benchmark": f"generated {args.layout} layout (raypipe.synthetic.segmentation), not the paper's data",
           "config": config or "embedded default", "overrides": args.set, "seeds": args.seeds, "runs": runs,
           "summary": summary}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
