"""Do the pipeline's cloud detectors read the generated benchmark's clouds as the simulator made them?

Generates the benchmark (``raypipe.synthetic.generate``: ``--tiles`` per domain of ``--size`` px,
``--seed``) under ``--out`` (a temporary folder when not given), reads every target tile's cloudy
Sentinel-2 file and its ground-truth cloud mask back from disk, and runs the pipeline's cloud stage
(``raypipe.clouds.stage.CloudStage``, ``clouds.mode: detect``, in this process, no Ray) with each
detector: ``s2cloudless`` at the pipeline's default factor (``clouds.detector``'s default) and the
DSen2-CR ``rule``. Per detector it prints

* the bucket agreement with the simulator's truth (clear < 0.1 <= partly <= 0.9 < cloudy, on the
  cloud fraction: ``raypipe.metrics.cloud_bucket``), overall;
* the 3 x 3 confusion of buckets (rows: truth, columns: detected);
* the mean absolute error of the tile's cloud fraction;

and the class balance (tiles per class) per domain and split. ``--json PATH`` writes the raw figures
(including every tile's true and detected fraction).

    PYTHONPATH=. .venv/bin/python benchmarks/detector_agreement.py --tiles 200 --size 32 --seed 0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np

from raypipe import raster, storage
from raypipe.clouds.detect import DEFAULT_FACTOR
from raypipe.clouds.stage import CloudConfig, CloudStage
from raypipe.metrics.classification import cloud_bucket
from raypipe.synthetic import LAYOUT, ROIS, SYNTHETIC_VERSION, generate

BUCKETS = ("clear", "partly", "cloudy")
DETECTORS = {"s2cloudless": CloudConfig(mode="detect", detector="s2cloudless"),
             "rule": CloudConfig(mode="detect", detector="rule")}


def _uri(root: str, modality: str, rec: dict) -> str:
    path = LAYOUT["target"][modality].format(roi=ROIS["target"], scene=rec["scene"], patch=rec["patch"])
    return storage.join(root, path)


def agreement(root: str, meta: dict, detectors: dict[str, CloudConfig] = DETECTORS) -> dict:
    """Per detector: agreement, confusion (truth x detected), MAE of the cloud fraction, per-tile fractions."""
    stages = {name: CloudStage(cfg, optical_scale=10000.0, is_sentinel2=True, optical_is_cloudy=True)
              for name, cfg in detectors.items()}
    out = {name: {"confusion": np.zeros((3, 3), dtype=int), "abs_err": [], "tiles": []} for name in detectors}
    for rec in meta["samples"]["target"]:
        s2 = raster.read(_uri(root, "s2_cloudy", rec), raster.Expect(bands=13))
        truth = float(raster.read(_uri(root, "cloudmask", rec), raster.Expect(bands=1))[0].astype(bool).mean())
        for name, stage in stages.items():
            _, mask = stage(rec["id"], s2)
            detected = float(mask.mean())
            r = out[name]
            r["confusion"][BUCKETS.index(cloud_bucket(truth)), BUCKETS.index(cloud_bucket(detected))] += 1
            r["abs_err"].append(abs(detected - truth))
            r["tiles"].append({"id": rec["id"], "label": rec["label"], "truth": round(truth, 4),
                               "detected": round(detected, 4)})
    result = {}
    for name, r in out.items():
        cm = r["confusion"]
        result[name] = {"agreement": float(np.trace(cm) / cm.sum()), "confusion": cm.tolist(),
                        "confusion_axes": {"rows": "truth", "columns": "detected", "buckets": list(BUCKETS)},
                        "fraction_mae": float(np.mean(r["abs_err"])), "tiles": r["tiles"]}
    return result


def class_balance(meta: dict) -> dict:
    return meta["class_counts"]


def print_report(meta: dict, result: dict, detectors: dict[str, CloudConfig] = DETECTORS) -> None:
    n = len(meta["samples"]["target"])
    print(f"benchmark: synthetic v{meta['version']}, {meta['tiles']} tiles/domain of {meta['size']} px, "
          f"seed {meta['seed']}, preset {meta['preset']}; {n} target tiles")
    for name, r in result.items():
        what = f"factor {detectors[name].factor or DEFAULT_FACTOR} (default)" if name == "s2cloudless" else "DSen2-CR"
        print(f"\n{name} ({what}): bucket agreement {r['agreement']:.3f}, cloud-fraction MAE {r['fraction_mae']:.3f}")
        print(f"  {'truth / detected':>18} " + " ".join(f"{b:>7}" for b in BUCKETS))
        for b, row in zip(BUCKETS, r["confusion"]):
            print(f"  {b:>18} " + " ".join(f"{v:>7d}" for v in row))
    classes = meta["classes"]
    print("\nclass balance (tiles per class)")
    print(f"  {'':>13} " + " ".join(f"{c[:8]:>8}" for c in classes))
    for domain, splits in meta["class_counts"].items():
        for split, counts in splits.items():
            print(f"  {domain + '/' + split:>13} " + " ".join(f"{counts[c]:>8d}" for c in classes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=200, help="tiles per domain")
    ap.add_argument("--size", type=int, default=32, help="tile side in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="where to write the benchmark (default: a temporary folder)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", default="", help="write the raw figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="detector-agreement-") as tmp:
        root = args.out or tmp
        started = time.monotonic()
        meta = generate(root, tiles=args.tiles, size=args.size, seed=args.seed, workers=args.workers, quiet=True)
        generated = time.monotonic() - started
        result = agreement(root, meta)
    print_report(meta, result)
    print(f"\n(generation {generated:.1f} s, detection {time.monotonic() - started - generated:.1f} s)")
    if args.json:
        raw = {"synthetic_version": SYNTHETIC_VERSION, "tiles": args.tiles, "size": args.size, "seed": args.seed,
               "preset": meta["preset"], "s2cloudless_factor": DEFAULT_FACTOR, "detectors": result,
               "class_counts": meta["class_counts"], "class_prior": meta.get("class_prior"),
               "cloud_summary": meta["clouds"]["summary"]}
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
