"""WHU-OPT-SAR fixture: ``optical/`` (4 bands uint8), ``sar/`` (1 band uint8), ``lbl/`` (codes 0, 10, …, 70).

    python tests/data/whu_opt_sar.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from raypipe.raster import write_geotiff


def make_whu(dest: Path, height: int = 300, width: int = 520, scenes: int = 2, seed: int = 0) -> None:
    """A tiny WHU-OPT-SAR tree: optical/ (4 bands uint8), sar/ (1 band uint8), lbl/ (0,10,…,70)."""
    rng = np.random.default_rng(seed)
    for i in range(scenes):
        name = f"NH49E00101{i}"
        write_geotiff(str(dest / "optical" / f"{name}.tif"), rng.integers(0, 255, (4, height, width), dtype=np.uint8))
        write_geotiff(str(dest / "sar" / f"{name}.tif"), rng.integers(0, 255, (1, height, width), dtype=np.uint8))
        write_geotiff(str(dest / "lbl" / f"{name}.tif"), (rng.integers(0, 8, (1, height, width)) * 10).astype(np.uint8))


if __name__ == "__main__":
    make_whu(Path(sys.argv[1]))
