"""Generate the simulated cloudy-transfer benchmark (DESIGN §7b) as GeoTIFFs in SEN12MS / SEN12MS-CR layouts.

    python jobs/make_synthetic.py --out /data/synthetic --tiles 40 --size 32 --seed 0 --scene-size 5
    python jobs/make_synthetic.py --out s3://bucket/synthetic --tiles 2000 --size 256 --seed 0 --with-reference

--tiles is per domain (source and target each get N). Layout, content and synthetic.json are
described in raypipe/synthetic/. Results on this benchmark are not the paper's numbers.
Endpoint and credentials for s3:// come from the standard AWS environment / config (AWS_ENDPOINT_URL, …).
"""

from __future__ import annotations

import argparse
import sys

from raypipe.synthetic import CLOUD_PRESETS, generate
from raypipe.errors import RaypipeError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output root: local path, file:// or s3:// URI")
    p.add_argument("--tiles", type=int, required=True, help="tiles per domain (>= 10)")
    p.add_argument("--size", type=int, required=True, help="tile side in pixels (>= 16)")
    p.add_argument("--seed", type=int, required=True, help="everything is determined by it")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all usable cores)")
    p.add_argument("--cloud-preset", default="thick", help=f"cloud simulator preset: {', '.join(CLOUD_PRESETS)}")
    p.add_argument("--scene-size", type=int, default=None,
                   help="patches per scene (scenes are split train/test); default 50, or tiles // 5 when 50 "
                        "would leave fewer than 5 scenes per domain")
    p.add_argument("--with-reference", action="store_true",
                   help="also write the cloud-free target S2 (ROIs1970_fall_s2); off by default")
    args = p.parse_args(argv)
    try:
        meta = generate(args.out, tiles=args.tiles, size=args.size, seed=args.seed, workers=args.workers,
                        preset=args.cloud_preset, scene_size=args.scene_size, with_reference=args.with_reference)
    except RaypipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"test scenes: {meta['test_scenes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
