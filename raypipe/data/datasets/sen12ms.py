"""SEN12MS: Sentinel-1 / Sentinel-2 / MODIS land-cover triplets for scene classification (MTTS).

**What it is.** SEN12MS (Schmitt et al., 2019): 180,662 triplets of Sentinel-1 GRD, Sentinel-2
L1C and MODIS land cover, 256×256 px at 10 m in UTM, from 252 regions of interest in four
seasons (``ROIs1158_spring``, ``ROIs1868_summer``, ``ROIs1970_fall``, ``ROIs2017_winter``).

**Bands.**

* ``s1``: 2 bands VV, VH backscatter in dB (float32) — :data:`raypipe.bands.S1_BANDS`.
* ``s2``: 13 bands B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12 (uint16, reflectance
  × 10000, L1C) — :data:`raypipe.bands.S2_BANDS`. Models get the 10 "land" bands B2–B8, B8A,
  B11, B12 (:data:`raypipe.bands.S2_LAND_BANDS`) by default, as the reference classification code.
* ``lc``: 4 bands IGBP, LCCS-LC, LCCS-LU, LCCS-SH (MODIS land cover codes).

Normalisation: z-score with the constants published with the reference code
(:data:`raypipe.bands.SEN12MS_S2_LAND_MEAN` / ``_STD``, ``SEN12MS_S1_MEAN`` / ``_STD``), or
min-max as the reference code does (S2 clip 0…10000 / 10000, S1 clip(−25, 0) / 25 + 1).

**Layout on disk**::

    ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p30.tif
    ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p30.tif
    ROIs1158_spring/lc_1/ROIs1158_spring_lc_1_p30.tif

Sample id: ``<ROI>_<scene>_p<patch>`` (e.g. ``ROIs1158_spring_1_p30``).

**Labels.** 10 "simplified IGBP" classes (:data:`SIMPLIFIED_IGBP`: Forest = IGBP 1–5, Shrubland
6–7, Savanna 8–9, Grassland 10, Wetland 11, Cropland 12 + 14, Urban 13, Snow/Ice 15, Barren 16,
Water 17); a patch's single label is the class covering most of its ``lc`` tile
(:func:`simplified_igbp_majority`), or comes from a label table / the official probability-label
file (``IGBP_probability_labels.pkl``, 17 IGBP probabilities per file name) given as ``labels``.

**Splits.** The official hold-out scenes (:data:`SEN12MS_HOLDOUT_SCENES`, read off the published
test list) are ``test``, the rest ``train``.

**Source / citation.** Schmitt M., Hughes L. H., Qiu C., Zhu X. X., "SEN12MS – a curated dataset
of georeferenced multi-spectral Sentinel-1/2 imagery for deep learning and data fusion", ISPRS
Annals 2019. https://mediatum.ub.tum.de/1474000

    prepare("sen12ms", "s3://bucket/SEN12MS", "s3://bucket/manifests/sen12ms.parquet")
"""

from __future__ import annotations

import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from raypipe import bands as B
from raypipe import raster, storage
from raypipe.data.datasets.base import BandStats, DatasetSpec, PrepareOptions, Quarantine, register
from raypipe.data.labels import read_label_table, resolve_label
from raypipe.errors import BadTileError, DatasetNotFoundError

# SEN12MS "simplified IGBP" scheme (10 classes) and the IGBP codes (1-17) each class gathers.
SIMPLIFIED_IGBP: tuple[str, ...] = (
    "Forest", "Shrubland", "Savanna", "Grassland", "Wetland",
    "Cropland", "Urban", "Snow/Ice", "Barren", "Water",
)
IGBP_TO_SIMPLIFIED: dict[int, int] = {
    1: 0, 2: 0, 3: 0, 4: 0, 5: 0,  # forests
    6: 1, 7: 1,  # shrublands
    8: 2, 9: 2,  # savannas
    10: 3,  # grassland
    11: 4,  # wetland
    12: 5, 14: 5,  # cropland, cropland/natural mosaic
    13: 6,  # urban
    15: 7,  # snow/ice
    16: 8,  # barren
    17: 9,  # water
}
_IGBP_LUT = np.full(256, -1, dtype=np.int16)
for _code, _cls in IGBP_TO_SIMPLIFIED.items():
    _IGBP_LUT[_code] = _cls

# Scenes of the official SEN12MS hold-out split, read off the published test list
# (18,106 S2 patch names; JakobCode/explaining_cloud_effects, DataHandling/DataSplits).
SEN12MS_HOLDOUT_SCENES: dict[str, frozenset[int]] = {
    "ROIs1158_spring": frozenset({15, 17, 63, 97, 124, 146}),
    "ROIs1868_summer": frozenset({15, 19, 43, 72, 79, 104, 131}),
    "ROIs1970_fall": frozenset({30, 35, 39, 47, 61, 120, 141, 144}),
    "ROIs2017_winter": frozenset({32, 64, 107, 135, 146}),
}

LC_BANDS = 4  # IGBP, LCCS-LC, LCCS-LU, LCCS-SH
LABEL_READ_THREADS = 16  # lc tiles read in parallel while scanning (object-storage latency)
LAYOUT_HINT = "ROIsXXXX_season/s1_N/…_pK.tif"

_SEN12MS_RE = re.compile(
    r"(?P<roi>ROIs\d{4}_[a-z]+)/(?P<mod>s1|s2|lc)_(?P<scene>\d+)/(?P=roi)_(?P=mod)_(?P=scene)_p(?P<patch>\d+)\.tif$"
)

# Band facts shared by every Sentinel-1/2 dataset of this family (SEN12MS-CR, the generated benchmark).
SENTINEL_FIELDS = dict(
    optical_bands=B.S2_BANDS, optical_dtypes=("uint16",), optical_scale=B.S2_SCALE,
    sar_bands=B.S1_BANDS, sar_dtypes=("float32", "float64"), classes=SIMPLIFIED_IGBP,
    default_optical_selection=B.S2_LAND_BANDS, is_sentinel2=True,
    optical_stats=BandStats(B.S2_LAND_BANDS, B.SEN12MS_S2_LAND_MEAN, B.SEN12MS_S2_LAND_STD),
    sar_stats=BandStats(B.S1_BANDS, B.SEN12MS_S1_MEAN, B.SEN12MS_S1_STD),
    sar_range=(-25.0, 0.0),
)


def simplified_igbp_majority(lc: np.ndarray) -> int:
    """Scene label of a SEN12MS ``lc`` tile: the simplified-IGBP class covering most pixels (-1 if none)."""
    igbp = np.asarray(lc[0] if lc.ndim == 3 else lc).astype(np.int64).ravel()
    cls = _IGBP_LUT[np.clip(igbp, 0, 255)]
    cls = cls[cls >= 0]
    if cls.size == 0:
        return -1
    return int(np.bincount(cls, minlength=len(SIMPLIFIED_IGBP)).argmax())


def igbp_probabilities_to_simplified(probs: np.ndarray) -> np.ndarray:
    """17 IGBP class probabilities (official SEN12MS label file) → 10 simplified-IGBP probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.zeros(len(SIMPLIFIED_IGBP))
    for code, cls in IGBP_TO_SIMPLIFIED.items():
        out[cls] += probs[code - 1]
    return out


def _reduce_igbp(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """A label table's 17 IGBP probabilities → simplified IGBP when the class list is the 10-class one."""
    if probs.size == 17 and len(classes) == len(SIMPLIFIED_IGBP):
        return igbp_probabilities_to_simplified(probs)
    return probs


def season_of(roi: str) -> str:
    return roi.split("_", 1)[1] if "_" in roi else ""


def is_holdout(roi: str, scene: int, test_scenes: dict[str, frozenset[int]] | None = None) -> bool:
    return int(scene) in (test_scenes or SEN12MS_HOLDOUT_SCENES).get(roi, frozenset())


def group_files(files: list[str], pattern: re.Pattern) -> dict[tuple[str, int, int], dict[str, str]]:
    """(roi, scene, patch) → {modality: uri} for the files whose path matches ``pattern``."""
    groups: dict[tuple[str, int, int], dict[str, str]] = defaultdict(dict)
    for uri in files:
        m = pattern.search(uri.replace("\\", "/"))
        if m:
            groups[(m["roi"], int(m["scene"]), int(m["patch"]))][m["mod"]] = uri
    return groups


def scan_sen12ms(root: str) -> dict[tuple[str, int, int], dict[str, str]]:
    """(roi, scene, patch) → {modality: uri} for every SEN12MS file under ``root``."""
    return group_files(storage.list_files(root, (".tif",)), _SEN12MS_RE)


def sample_id(roi: str, scene: int, patch: int) -> str:
    return f"{roi}_{scene}_p{patch}"


def sen12ms_lc_uri(labels_root: str, roi: str, scene: int, patch: int) -> str:
    """Where a SEN12MS root keeps the lc tile of a patch (used to label SEN12MS-CR samples)."""
    return storage.join(labels_root, roi, f"lc_{scene}", f"{roi}_lc_{scene}_p{patch}.tif")


def sibling_uri(uri: str, modality: str) -> str:
    """The path a missing modality file of the same SEN12MS sample should have (for the error message)."""
    m = _SEN12MS_RE.search(uri)
    if not m:
        return uri
    roi, scene, patch = m["roi"], m["scene"], m["patch"]
    return f"{uri[: m.start()]}{roi}/{modality}_{scene}/{roi}_{modality}_{scene}_p{patch}.tif"


def _read_labels_parallel(uris: list[str], quarantine: Quarantine, ids: list[str]) -> list[int]:
    def one(uri):
        try:
            return simplified_igbp_majority(raster.read(uri, raster.Expect(bands=LC_BANDS)))
        except BadTileError as exc:
            return exc

    with ThreadPoolExecutor(LABEL_READ_THREADS) as pool:
        results = list(pool.map(one, uris))
    out = []
    for sid, res in zip(ids, results):
        if isinstance(res, BadTileError):
            quarantine.bad(sid, res.uri, res.reason, res.detail)
            out.append(None)
        else:
            out.append(res)
    return out


def _label_from_table(table, sid: str, uris: list[str], classes: list[str]) -> int | None:
    for key in (sid, *[u.rsplit("/", 1)[-1] for u in uris if u]):
        if key in table:
            return resolve_label(table[key], classes, f"--labels[{key}]", _reduce_igbp)
    return None


def collect_rows(spec: DatasetSpec, root: str, quarantine: Quarantine, options: PrepareOptions, *,
                 scan: Callable[[str], dict], required: tuple[str, ...], layout: str,
                 sibling: Callable[[str, str], str], domain: str = "",
                 test_scenes: dict[str, frozenset[int]] | None = None) -> tuple[list[dict], list[str]]:
    """Manifest rows of a SEN12MS-family tree (SEN12MS, SEN12MS-CR, the generated benchmark).

    ``scan`` groups the files by (roi, scene, patch); a sample lacking one of the ``required``
    modalities is quarantined under the path ``sibling`` says it should have; labels come from a
    label table (``options.labels``), else from the sample's ``lc`` tile (its own or one under
    ``options.labels_root``); ``test_scenes`` (default: the official hold-out) are ``test``."""
    groups = scan(root)
    if not groups:
        raise DatasetNotFoundError(storage.redact(root), f"no {spec.name} tiles found (expected layout {layout})")
    classes = list(spec.classes)
    table = None
    if options.labels:
        table, table_classes = read_label_table(options.labels, options.classes)
        classes = list(table_classes or classes)
    rows, lc_uris, lc_rows = [], [], []
    for (roi, scene, patch), mods in sorted(groups.items()):
        sid = sample_id(roi, scene, patch)
        present = [m for m in required if m in mods]
        if len(present) < len(required):
            have = next(iter(mods.values()))
            for m in required:
                if m not in mods:
                    quarantine.bad(sid, sibling(have, m), "missing", f"{m} file of this sample is missing")
            continue
        row = dict(
            sample_id=sid, dataset=spec.name, domain=domain, region=roi, season=season_of(roi),
            scene=str(scene), patch=str(patch), sar_uri=mods["s1"],
            optical_uri=mods.get("s2", ""), optical_cloudy_uri=mods.get("s2_cloudy", ""),
            cloud_mask_uri=mods.get("cloudmask", ""),
            split="test" if is_holdout(roi, scene, test_scenes) else "train",
            optical_bands=len(spec.optical_bands), sar_bands=len(spec.sar_bands),
        )
        lc = mods.get("lc") or (sen12ms_lc_uri(options.labels_root, roi, scene, patch) if options.labels_root else "")
        row["label_uri"] = lc
        if table is not None:
            label = _label_from_table(table, sid, list(mods.values()), classes)
            row["label"] = -1 if label is None else label
        elif lc:
            lc_uris.append(lc)
            lc_rows.append(len(rows))
        rows.append(row)
    if lc_uris:
        labels_found = _read_labels_parallel(lc_uris, quarantine, [rows[i]["sample_id"] for i in lc_rows])
        drop = set()
        for i, label in zip(lc_rows, labels_found):
            if label is None:
                drop.add(i)
            else:
                rows[i]["label"] = label
        rows = [r for i, r in enumerate(rows) if i not in drop]
    for r in rows:
        lab = r.get("label", -1)
        r["label_name"] = classes[lab] if lab is not None and lab >= 0 else ""
    return rows, classes


class Sen12MS(DatasetSpec):
    """SEN12MS (scene classification); see :mod:`raypipe.data.datasets.sen12ms`."""

    required_modalities = ("s1", "s2")

    def manifest_rows(self, root: str, quarantine: Quarantine, options: PrepareOptions,
                      domain: str = "", test_scenes: dict[str, frozenset[int]] | None = None):
        return collect_rows(self, root, quarantine, options, scan=scan_sen12ms, required=self.required_modalities,
                            layout=LAYOUT_HINT, sibling=sibling_uri, domain=domain, test_scenes=test_scenes)


SEN12MS = register(Sen12MS("sen12ms", "classification", **SENTINEL_FIELDS))
