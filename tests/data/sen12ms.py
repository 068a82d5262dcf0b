"""SEN12MS fixture: a tiny tree in the official layout (``ROIs1158_spring/{s1,s2,lc}_<scene>/…``).

s1: 2 bands float32 dB; s2: 13 bands uint16; lc: 4 bands uint16 (IGBP, LCCS…); UTM CRS.

    python tests/data/sen12ms.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from raypipe.raster import write_geotiff


def s2_tile(rng: np.random.Generator, size: int, bright: bool = False) -> np.ndarray:
    base = rng.integers(400, 3000, size=(13, 1, 1))
    if bright:
        base[:] = 7000
    return (base + rng.integers(0, 300, size=(13, size, size))).astype(np.uint16)


def s1_tile(rng: np.random.Generator, size: int) -> np.ndarray:
    return (rng.normal(-14, 3, size=(2, size, size))).astype(np.float32)


def lc_tile(igbp_major: int, size: int, igbp_minor: int = 10, minor_fraction: float = 0.3) -> np.ndarray:
    lc = np.zeros((4, size, size), dtype=np.uint16)
    lc[0] = igbp_major
    k = int(size * minor_fraction)
    lc[0, :k, :] = igbp_minor
    lc[1:] = 1
    return lc


def make_sen12ms(dest: Path, size: int = 16, seed: int = 0) -> dict[str, int]:
    """A tiny SEN12MS tree: spring scene 1 (train) and 15 (an official hold-out scene).
    Returns sample id → expected simplified-IGBP label."""
    rng = np.random.default_rng(seed)
    roi = "ROIs1158_spring"
    expected = {}
    # (scene, patch, IGBP major code) -> simplified class: 1 -> Forest(0), 17 -> Water(9), 13 -> Urban(6)
    for scene, patch, igbp, cls in ((1, 30, 1, 0), (1, 31, 17, 9), (15, 100, 13, 6), (15, 101, 12, 5)):
        for mod, arr in (("s1", s1_tile(rng, size)), ("s2", s2_tile(rng, size)), ("lc", lc_tile(igbp, size))):
            write_geotiff(str(dest / roi / f"{mod}_{scene}" / f"{roi}_{mod}_{scene}_p{patch}.tif"), arr,
                          crs="EPSG:32633")
        expected[f"{roi}_{scene}_p{patch}"] = cls
    return expected


if __name__ == "__main__":
    print(make_sen12ms(Path(sys.argv[1])))
