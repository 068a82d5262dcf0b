"""M3M-CR: PlanetScope + Sentinel-1 + ESA WorldCover for land-cover segmentation under real clouds (CloudSeg).

**What it is.** M3M-CR (Xu et al., CloudSeg; also released as M3R-CR): multi-modal, multi-resolution
samples of cloud-free and cloudy PlanetScope optical, Sentinel-1 SAR, ESA WorldCover 2020 land
cover and a cloud mask, in four seasons.

**Bands.**

* ``planet_cloudfree`` / ``planet_cloudy``: 4 bands B, G, R, NIR (:data:`raypipe.bands.PLANET_BANDS`),
  uint16 reflectance × 10000, 300×300 at 3 m, UTM (nodata 0).
* ``S1``: 2 bands VV, VH in dB, **float64**, 90×90 at 10 m.
* ``landcover``: 1 band uint8 ESA WorldCover codes 10…100, 90×90 at 10 m.
* ``cloudmask``: bool ``.npy`` (300, 300), True = cloud (used as given by the cloud stage).

A 10-pixel optical grid aligns with 3 label / SAR pixels (``aux_grid`` = 0.3). Normalisation:
min-max (optical / 10000; S1 clip(−25, 0) / 25 + 1); z-score uses SEN12MS's S1 constants and needs
user optical constants (none are published for PlanetScope).

**Layout on disk** (official)::

    {train,test}/<modality>_<season>/<modality>_<season>_<aoi>/<modality>_<season>_<aoi>_p_<n>.<ext>

    train/planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif
    train/S1_fall/S1_fall_1/S1_fall_1_p_457.tif
    train/landcover_fall/landcover_fall_1/landcover_fall_1_p_457.tif
    train/cloudmask_fall/cloudmask_fall_1/cloudmask_fall_1_p_457.npy

Sample id: ``<season>_<aoi>_p_<n>``. A sample needs ``planet_cloudy``, ``S1`` and ``landcover``;
``planet_cloudfree`` and ``cloudmask`` are optional.

**Labels.** CloudSeg's 6 level-1 classes (:data:`CLOUDSEG_CLASSES`) from WorldCover
(:data:`WORLDCOVER_TO_CLOUDSEG`): 10 → Forest, 20, 30 → Rangeland, 40 → Agriculture, 50 → Urban,
60 → Barren, 80, 90 → Water; 70, 95, 100 and any other code → ignore (255).

**Splits.** The release's ``train`` / ``test`` folders.

**Source / citation.** Xu F. et al., "Multimodal and Multiresolution Data Fusion for
High-Resolution Cloud Removal: A Novel Baseline and Benchmark", IEEE TGRS 2023 (M3R-CR), and
the CloudSeg code release; samples: github.com/xufangchn/CloudSeg (``M3R-CR/``), identical to
github.com/zhu-xlab/M3R-CR (``M3M-CR/``).

    prepare("m3m-cr", "/data/M3M-CR", "m3m.parquet", with_cloud_stats=True)
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict

import numpy as np

from raypipe import bands as B
from raypipe import storage
from raypipe.data.datasets.base import BandStats, DatasetSpec, PrepareOptions, Quarantine, register
from raypipe.data.labels import IGNORE_INDEX, apply_lookup, lookup_table
from raypipe.errors import DatasetNotFoundError

# ESA WorldCover codes → CloudSeg 6-class level-1 scheme (255 = ignore).
CLOUDSEG_CLASSES: tuple[str, ...] = ("Forest", "Rangeland", "Agriculture", "Urban", "Barren", "Water")
WORLDCOVER_TO_CLOUDSEG: dict[int, int] = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5,
                                          70: IGNORE_INDEX, 95: IGNORE_INDEX, 100: IGNORE_INDEX}
_WC_LUT = lookup_table(WORLDCOVER_TO_CLOUDSEG, IGNORE_INDEX)

MODALITIES = ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")
REQUIRED = ("planet_cloudy", "S1", "landcover")
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


class M3MCR(DatasetSpec):
    """M3M-CR (segmentation under real clouds); see :mod:`raypipe.data.datasets.m3mcr`."""

    def manifest_rows(self, root: str, quarantine: Quarantine, options: PrepareOptions):
        groups = scan(root)
        if not groups:
            raise DatasetNotFoundError(storage.redact(root), "no M3M-CR files found (expected "
                                       "{train,test}/<modality>_<season>/<modality>_<season>_<aoi>/…_p_<n>.tif)")
        rows = []
        for (split, season, aoi, patch), mods in sorted(groups.items()):
            sid = f"{season}_{aoi}_p_{patch}"
            missing = [m for m in REQUIRED if m not in mods]
            if missing:
                for m in missing:
                    quarantine.bad(sid, f"{root}/{split}/{m}_{season}/{m}_{season}_{aoi}/{m}_{season}_{aoi}_p_{patch}.tif",
                                   "missing", f"{m} file of this sample is missing")
                continue
            rows.append(dict(sample_id=sid, dataset=self.name, split=split, region=str(aoi), season=season,
                             scene=str(aoi), patch=str(patch), optical_uri=mods.get("planet_cloudfree", ""),
                             optical_cloudy_uri=mods["planet_cloudy"], sar_uri=mods["S1"],
                             label_uri=mods["landcover"], cloud_mask_uri=mods.get("cloudmask", ""),
                             optical_bands=len(self.optical_bands), sar_bands=len(self.sar_bands)))
        return rows, list(self.classes)

    def map_labels(self, label: np.ndarray) -> np.ndarray:
        """WorldCover codes → CloudSeg class indices (255 = ignore)."""
        return apply_lookup(label, _WC_LUT)


M3M_CR = register(M3MCR(
    "m3m-cr", "segmentation", optical_bands=B.PLANET_BANDS, optical_dtypes=("uint16",), optical_scale=10000.0,
    sar_bands=B.S1_BANDS, sar_dtypes=("float32", "float64"), classes=CLOUDSEG_CLASSES, aux_grid=0.3,
    sar_stats=BandStats(B.S1_BANDS, B.SEN12MS_S1_MEAN, B.SEN12MS_S1_STD), sar_range=(-25.0, 0.0)))

# The generated benchmark in the M3M-CR layout (raypipe.synthetic.segmentation): the same files, but its
# masks are the cloud simulator's own, i.e. ground truth, which a user of real imagery never has: training
# on them is marked oracle (evaluation splits pixels by them, as on real M3M-CR).
M3M_CR_GENERATED = register(dataclasses.replace(M3M_CR, name="m3m-cr-generated", masks_are_truth=True))
