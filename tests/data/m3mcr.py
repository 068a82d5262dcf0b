"""M3M-CR fixture in the official layout (as the real samples in shared/data/real/M3M-CR/M3R-CR)::

    {train,test}/<modality>_<season>/<modality>_<season>_<aoi>/<modality>_<season>_<aoi>_p_<n>.<ext>

planet_cloudfree / planet_cloudy: 4 bands (B, G, R, NIR) uint16, nodata 0, 3 m; S1: 2 bands (VV, VH)
float64 dB, 10 m; landcover: 1 band uint8 ESA WorldCover codes, 10 m; cloudmask: bool ``.npy``
(True = cloud) on the optical grid. All in a UTM CRS. Real tiles are 300×300 optical and 90×90
SAR / labels; here ``size`` (default 30) optical and ``size * 3 // 10`` SAR / label pixels, so the
10-pixel optical grid still aligns with 3 label pixels.

    python tests/data/m3mcr.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from raypipe.raster import write_geotiff

# (split, season, aoi, patch, UTM EPSG, rows of cloud at the top of the optical tile or None = no mask file)
SAMPLES = (
    ("train", "fall", 1, 457, 32646, 12),
    ("train", "fall", 1, 458, 32646, None),
    ("test", "summer", 33, 1, 32736, 30),
)
# Every WorldCover 2020 code, plus 0 (not a WorldCover class), cycled over the label pixels.
WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100, 0)


def path(root: Path, split: str, modality: str, season: str, aoi: int, patch: int, ext: str = "tif") -> Path:
    return root / split / f"{modality}_{season}" / f"{modality}_{season}_{aoi}" / f"{modality}_{season}_{aoi}_p_{patch}.{ext}"


def make_m3mcr(dest: Path, size: int = 30, seed: int = 0, skip: tuple[tuple[int, str], ...] = ()) -> dict[str, dict]:
    """Write the :data:`SAMPLES` under ``dest``; ``skip`` = (patch, modality) files to leave out.

    Returns sample id (``<season>_<aoi>_p_<n>``) → {"split", "season", "aoi", "patch", "cloud_fraction"
    (of the written mask, 0 without one), "paths": {modality: Path}}."""
    rng = np.random.default_rng(seed)
    aux = size * 3 // 10
    out = {}
    for split, season, aoi, patch, epsg, cloud_rows in SAMPLES:
        east, north = 500_000.0 + 1000 * aoi, 5_000_000.0 + 1000 * patch
        opt_geo = dict(crs=f"EPSG:{epsg}", transform=(3.0, 0.0, east, 0.0, -3.0, north))
        aux_geo = dict(crs=f"EPSG:{epsg}", transform=(10.0, 0.0, east, 0.0, -10.0, north))
        clear = rng.integers(100, 3000, (4, size, size)).astype(np.uint16)
        mask = np.zeros((size, size), dtype=bool)
        if cloud_rows is not None:
            mask[:cloud_rows] = True
        cloudy = clear.copy()
        cloudy[:, mask] = 8000
        sar = rng.uniform(-30.0, 5.0, (2, aux, aux))  # float64, beyond -25..0 on purpose (min-max clips)
        codes = np.array(WORLDCOVER_CODES, dtype=np.uint8)
        lc = codes[np.arange(aux * aux) % len(codes)].reshape(1, aux, aux)
        files = {"planet_cloudfree": (clear, opt_geo, 0), "planet_cloudy": (cloudy, opt_geo, 0),
                 "S1": (sar, aux_geo, None), "landcover": (lc, aux_geo, None)}
        paths = {}
        for modality, (arr, geo, nodata) in files.items():
            if (patch, modality) in skip:
                continue
            paths[modality] = path(dest, split, modality, season, aoi, patch)
            write_geotiff(str(paths[modality]), arr, nodata=nodata, **geo)
        if cloud_rows is not None and (patch, "cloudmask") not in skip:
            paths["cloudmask"] = path(dest, split, "cloudmask", season, aoi, patch, "npy")
            paths["cloudmask"].parent.mkdir(parents=True, exist_ok=True)
            np.save(paths["cloudmask"], mask)
        out[f"{season}_{aoi}_p_{patch}"] = dict(split=split, season=season, aoi=aoi, patch=patch,
                                                cloud_fraction=float(mask.mean()), paths=paths)
    return out


if __name__ == "__main__":
    for sid, info in make_m3mcr(Path(sys.argv[1])).items():
        print(sid, info["split"], f"cloud {info['cloud_fraction']:.2f}", *sorted(info["paths"]))
