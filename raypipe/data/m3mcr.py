"""M3M-CR scanner (land-cover segmentation under real clouds).

**M3M-CR** (Xu et al., CloudSeg): PlanetScope optical (4 bands B, G, R, NIR, uint16, 300×300 at
3 m) cloud-free and cloudy, Sentinel-1 (2 bands VV/VH dB, float64, 90×90 at 10 m), ESA
WorldCover 2020 land cover (1 band uint8, 90×90) and a cloud mask (bool ``.npy``, 300×300,
True = cloud). A 10-pixel optical grid aligns with 3 label pixels. Official layout::

    {train,test}/<modality>_<season>/<modality>_<season>_<aoi>/<modality>_<season>_<aoi>_p_<n>.<ext>

with modalities ``planet_cloudfree``, ``planet_cloudy``, ``S1``, ``landcover``, ``cloudmask``.
Labels map to CloudSeg's 6 level-1 classes (``raypipe.data.labels.WORLDCOVER_TO_CLOUDSEG``).
"""

from __future__ import annotations

import re
from collections import defaultdict

from raypipe import storage

MODALITIES = ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")
_RE = re.compile(
    r"(?P<split>train|test)/(?P<mod>planet_cloudfree|planet_cloudy|S1|landcover|cloudmask)_(?P<season>[a-z]+)/"
    r"(?P=mod)_(?P=season)_(?P<aoi>\d+)/(?P=mod)_(?P=season)_(?P=aoi)_p_(?P<patch>\d+)\.(?:tif|npy)$"
)


def scan(root: str) -> dict[tuple[str, str, int, int], dict[str, str]]:
    """(split, season, aoi, patch) → {modality: uri} for every M3M-CR file under ``root``."""
    groups: dict[tuple[str, str, int, int], dict[str, str]] = defaultdict(dict)
    for uri in storage.list_files(root, (".tif", ".npy")):
        m = _RE.search(uri.replace("\\", "/"))
        if m:
            groups[(m["split"], m["season"], int(m["aoi"]), int(m["patch"]))][m["mod"]] = uri
    return groups
