"""SEN12MS and SEN12MS-CR scanners (scene classification).

**SEN12MS** (Schmitt et al., 2019): 180,662 triplets of Sentinel-1 GRD (2 bands VV/VH in dB,
float32), Sentinel-2 L1C (13 bands, uint16 reflectance×10000) and MODIS land cover (4 bands:
IGBP, LCCS-LC, LCCS-LU, LCCS-SH), 256×256 px at 10 m, UTM. Layout::

    ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p30.tif
    ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p30.tif
    ROIs1158_spring/lc_1/ROIs1158_spring_lc_1_p30.tif

Scene label: the simplified-IGBP class covering most of the ``lc`` tile, or the official
probability-label file (``IGBP_probability_labels.pkl``) when given. Split: the official hold-out
scenes (``SEN12MS_HOLDOUT_SCENES``) are ``test``, the rest ``train``.

**SEN12MS-CR** (Ebel et al., 2020): the same places with a cloudy Sentinel-2 acquisition. Layout::

    ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p407.tif
    ROIs1158_spring_s2/s2_1/ROIs1158_spring_s2_1_p407.tif
    ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p407.tif

It carries no land cover: labels come from an ``<ROI>_lc/lc_<scene>/…`` folder beside it, from a
SEN12MS root (``labels_root``), or from a label table. A ``<ROI>_cloudmask`` folder, when present
(raypipe's generated benchmark writes one), gives cloud masks.

Citations: Schmitt M., Hughes L. H., Qiu C., Zhu X. X., "SEN12MS – a curated dataset of
georeferenced multi-spectral Sentinel-1/2 imagery for deep learning and data fusion", ISPRS
Annals 2019; Ebel P. et al., "Multisensor Data Fusion for Cloud Removal in Global and All-Season
Sentinel-2 Imagery", IEEE TGRS 2020.
"""

from __future__ import annotations

import re
from collections import defaultdict

from raypipe import storage

# Scenes of the official SEN12MS hold-out split, read off the published test list
# (18,106 S2 patch names; JakobCode/explaining_cloud_effects, DataHandling/DataSplits).
SEN12MS_HOLDOUT_SCENES: dict[str, frozenset[int]] = {
    "ROIs1158_spring": frozenset({15, 17, 63, 97, 124, 146}),
    "ROIs1868_summer": frozenset({15, 19, 43, 72, 79, 104, 131}),
    "ROIs1970_fall": frozenset({30, 35, 39, 47, 61, 120, 141, 144}),
    "ROIs2017_winter": frozenset({32, 64, 107, 135, 146}),
}

_SEN12MS_RE = re.compile(
    r"(?P<roi>ROIs\d{4}_[a-z]+)/(?P<mod>s1|s2|lc)_(?P<scene>\d+)/(?P=roi)_(?P=mod)_(?P=scene)_p(?P<patch>\d+)\.tif$"
)
_SEN12MSCR_RE = re.compile(
    r"(?P<roi>ROIs\d{4}_[a-z]+)_(?P<mod>s1|s2|s2_cloudy|lc|cloudmask)/(?P=mod)_(?P<scene>\d+)/"
    r"(?P=roi)_(?P=mod)_(?P=scene)_p(?P<patch>\d+)\.tif$"
)


def season_of(roi: str) -> str:
    return roi.split("_", 1)[1] if "_" in roi else ""


def is_holdout(roi: str, scene: int, test_scenes: dict[str, frozenset[int]] | None = None) -> bool:
    return int(scene) in (test_scenes or SEN12MS_HOLDOUT_SCENES).get(roi, frozenset())


def _group(files: list[str], pattern: re.Pattern) -> dict[tuple[str, int, int], dict[str, str]]:
    groups: dict[tuple[str, int, int], dict[str, str]] = defaultdict(dict)
    for uri in files:
        m = pattern.search(uri.replace("\\", "/"))
        if m:
            groups[(m["roi"], int(m["scene"]), int(m["patch"]))][m["mod"]] = uri
    return groups


def scan_sen12ms(root: str) -> dict[tuple[str, int, int], dict[str, str]]:
    """(roi, scene, patch) → {modality: uri} for every SEN12MS file under ``root``."""
    return _group(storage.list_files(root, (".tif",)), _SEN12MS_RE)


def scan_sen12ms_cr(root: str) -> dict[tuple[str, int, int], dict[str, str]]:
    """(roi, scene, patch) → {modality: uri} for every SEN12MS-CR file under ``root``."""
    return _group(storage.list_files(root, (".tif",)), _SEN12MSCR_RE)


def sample_id(roi: str, scene: int, patch: int) -> str:
    return f"{roi}_{scene}_p{patch}"


def sen12ms_lc_uri(labels_root: str, roi: str, scene: int, patch: int) -> str:
    """Where a SEN12MS root keeps the lc tile of a patch (used to label SEN12MS-CR samples)."""
    return storage.join(labels_root, roi, f"lc_{scene}", f"{roi}_lc_{scene}_p{patch}.tif")
