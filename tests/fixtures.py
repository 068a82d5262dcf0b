"""Generated fixtures in the official dataset layouts (same names, band counts, dtypes, CRS), tiny.

Tests run the real readers over these files; nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from raypipe.raster import write_geotiff

REAL_CR = "SEN12MS-CR/GLF-CR/data"
REAL_CR_PLACES = ("ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797")


def layout_real_sen12ms_cr(real: Path, dest: Path) -> Path:
    """Lay the real SEN12MS-CR tiles out under their official names (the shared copy drops modality tags)."""
    src = real / REAL_CR
    for place in REAL_CR_PLACES:
        roi_season, rest = place.rsplit("_", 2)[0], place.rsplit("_", 2)[1:]
        scene, patch = rest[0], rest[1]
        for folder, mod in (("s1", "s1"), ("s2_cloudfree", "s2"), ("s2_cloudy", "s2_cloudy")):
            out = dest / f"{roi_season}_{mod}" / f"{mod}_{scene}" / f"{roi_season}_{mod}_{scene}_{patch}.tif"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / folder / f"{place}.tif", out)
    return dest


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


def make_sen12ms_cr(dest: Path, size: int = 16, seed: int = 0, n: int = 4) -> list[str]:
    """A tiny SEN12MS-CR tree (s1, s2, s2_cloudy) with n patches of scene 3; returns sample ids."""
    rng = np.random.default_rng(seed)
    roi = "ROIs1868_summer"
    ids = []
    for patch in range(n):
        for mod, arr in (("s1", s1_tile(rng, size)), ("s2", s2_tile(rng, size)),
                         ("s2_cloudy", s2_tile(rng, size, bright=patch % 2 == 1))):
            write_geotiff(str(dest / f"{roi}_{mod}" / f"{mod}_3" / f"{roi}_{mod}_3_p{patch}.tif"), arr,
                          crs="EPSG:32631")
        ids.append(f"{roi}_3_p{patch}")
    return ids


def make_whu(dest: Path, height: int = 300, width: int = 520, scenes: int = 2, seed: int = 0) -> None:
    """A tiny WHU-OPT-SAR tree: optical/ (4 bands uint8), sar/ (1 band uint8), lbl/ (0,10,…,70)."""
    rng = np.random.default_rng(seed)
    for i in range(scenes):
        name = f"NH49E00101{i}"
        write_geotiff(str(dest / "optical" / f"{name}.tif"), rng.integers(0, 255, (4, height, width), dtype=np.uint8))
        write_geotiff(str(dest / "sar" / f"{name}.tif"), rng.integers(0, 255, (1, height, width), dtype=np.uint8))
        write_geotiff(str(dest / "lbl" / f"{name}.tif"), (rng.integers(0, 8, (1, height, width)) * 10).astype(np.uint8))
