"""Scan an official dataset layout and write its Parquet manifest.

    python jobs/prepare_data.py --dataset sen12ms-cr --root s3://bucket/SEN12MS-CR --out s3://bucket/manifests/cr.parquet
    python jobs/prepare_data.py --dataset m3m-cr --root /data/M3M-CR --out m3m.parquet --with-cloud-stats

Endpoint and credentials come from the standard AWS environment / config (AWS_ENDPOINT_URL, …).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from raypipe.data.datasets import SPECS
from raypipe.data.prepare import prepare
from raypipe.errors import RaypipeError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(SPECS))
    p.add_argument("--root", required=True, help="dataset root: local path, file:// or s3:// URI")
    p.add_argument("--out", required=True, help="manifest URI (.parquet)")
    p.add_argument("--labels", help="label table (CSV/Parquet/JSON: sample_id, class) or SEN12MS probability-label .pkl")
    p.add_argument("--classes", help="comma-separated class list (order = class index) for a label table")
    p.add_argument("--split-list", help="WHU-OPT-SAR: file listing the test scene names")
    p.add_argument("--labels-root", help="SEN12MS root whose lc tiles label SEN12MS-CR samples")
    p.add_argument("--with-cloud-stats", action="store_true", help="add cloud_fraction per sample (runs the cloud stage)")
    p.add_argument("--clouds", default="{}", help='cloud stage config as JSON, e.g. \'{"detector": "rule"}\'')
    p.add_argument("--on-bad-tile", choices=("error", "skip"), default="error")
    p.add_argument("--tile-size", type=int, default=256, help="WHU-OPT-SAR: tile size cut from each scene")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of each domain's training scenes held out as the val split (default 0.15)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = prepare(args.dataset, args.root, args.out, labels=args.labels, labels_root=args.labels_root,
                         on_bad_tile=args.on_bad_tile, with_cloud_stats=args.with_cloud_stats,
                         cloud_config=json.loads(args.clouds), tile_size=args.tile_size,
                         classes=args.classes.split(",") if args.classes else None, split_list=args.split_list,
                         val_fraction=args.val_fraction)
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    for q in report.quarantined:
        print(f"quarantined {q['sample_id']}: {q['uri']} [{q['reason']}] {q['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
