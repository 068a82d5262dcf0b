"""SEN12MS-CR: SEN12MS places with a cloudy Sentinel-2 acquisition (scene classification under real clouds).

**What it is.** SEN12MS-CR (Ebel et al., 2020): for 169 SEN12MS regions of interest, Sentinel-1
GRD, a cloud-free Sentinel-2 L1C and a *cloudy* Sentinel-2 L1C of the same place on another date,
256×256 px at 10 m in UTM.

**Bands.** As SEN12MS (:mod:`raypipe.data.datasets.sen12ms`): ``s1`` 2 bands VV, VH in dB
(float32); ``s2`` and ``s2_cloudy`` 13 bands B1…B12 incl. B8A, B10 (uint16, reflectance × 10000).
Models get the 10 land bands by default; the same SEN12MS z-score constants apply.

**Layout on disk**::

    ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p407.tif
    ROIs1158_spring_s2/s2_1/ROIs1158_spring_s2_1_p407.tif
    ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p407.tif

A sample needs ``s1`` and ``s2_cloudy``; ``s2`` (the cloud-free reference) is optional. A
``<ROI>_cloudmask/cloudmask_<scene>/…`` folder, when present (raypipe's generated benchmark writes
one), gives cloud masks; otherwise the cloud stage detects clouds on the cloudy S2 (s2cloudless).

**Labels.** SEN12MS-CR carries no land cover: labels come from an ``<ROI>_lc/lc_<scene>/…`` folder
beside it, from a SEN12MS root (``labels_root``: its ``lc`` tile of the same patch), or from a
label table (``labels``). Classes: SEN12MS's 10 simplified IGBP classes unless the table says
otherwise.

**Splits.** The official SEN12MS hold-out scenes are ``test``, the rest ``train``.

**Source / citation.** Ebel P., Meraner A., Schmitt M., Zhu X. X., "Multisensor Data Fusion for
Cloud Removal in Global and All-Season Sentinel-2 Imagery", IEEE TGRS 2020.
https://patricktum.github.io/cloud_removal/sen12mscr/

    prepare("sen12ms-cr", "s3://bucket/SEN12MS-CR", "cr.parquet", labels_root="s3://bucket/SEN12MS")
"""

from __future__ import annotations

import re

from raypipe import storage
from raypipe.data.datasets.base import PrepareOptions, Quarantine, register
from raypipe.data.datasets.sen12ms import SENTINEL_FIELDS, Sen12MS, collect_rows, group_files

LAYOUT_HINT = "ROIsXXXX_season_s1/s1_N/…_pK.tif"
MODALITIES = ("s1", "s2", "s2_cloudy", "lc", "cloudmask")

_SEN12MSCR_RE = re.compile(
    r"(?P<roi>ROIs\d{4}_[a-z]+)_(?P<mod>s1|s2|s2_cloudy|lc|cloudmask)/(?P=mod)_(?P<scene>\d+)/"
    r"(?P=roi)_(?P=mod)_(?P=scene)_p(?P<patch>\d+)\.tif$"
)


def scan_sen12ms_cr(root: str) -> dict[tuple[str, int, int], dict[str, str]]:
    """(roi, scene, patch) → {modality: uri} for every SEN12MS-CR file under ``root``."""
    return group_files(storage.list_files(root, (".tif",)), _SEN12MSCR_RE)


def sibling_uri(uri: str, modality: str) -> str:
    """The path a missing modality file of the same SEN12MS-CR sample should have (for the error message)."""
    m = _SEN12MSCR_RE.search(uri)
    if not m:
        return uri
    roi, scene, patch = m["roi"], m["scene"], m["patch"]
    return f"{uri[: m.start()]}{roi}_{modality}/{modality}_{scene}/{roi}_{modality}_{scene}_p{patch}.tif"


class Sen12MSCR(Sen12MS):
    """SEN12MS-CR (scene classification under real clouds); see :mod:`raypipe.data.datasets.sen12ms_cr`."""

    required_modalities = ("s1", "s2_cloudy")

    def manifest_rows(self, root: str, quarantine: Quarantine, options: PrepareOptions,
                      domain: str = "", test_scenes: dict[str, frozenset[int]] | None = None):
        return collect_rows(self, root, quarantine, options, scan=scan_sen12ms_cr,
                            required=self.required_modalities, layout=LAYOUT_HINT, sibling=sibling_uri,
                            domain=domain, test_scenes=test_scenes)


SEN12MS_CR = register(Sen12MSCR("sen12ms-cr", "classification", **SENTINEL_FIELDS))
