"""SEN12MS-CR fixture (``ROIs1868_summer_{s1,s2,s2_cloudy}/…``) and the real tiles under official names.

    python tests/data/sen12ms_cr.py OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script (python tests/data/sen12ms_cr.py): make `data` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.sen12ms import s1_tile, s2_tile  # noqa: E402
from raypipe.raster import write_geotiff  # noqa: E402

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


if __name__ == "__main__":
    print(make_sen12ms_cr(Path(sys.argv[1])))
