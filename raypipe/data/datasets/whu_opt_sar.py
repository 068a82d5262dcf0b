"""WHU-OPT-SAR: GF-1 optical + GF-3 SAR scenes for land-cover segmentation (clouds are simulated).

**What it is.** WHU-OPT-SAR (Li et al., 2022): 100 co-registered scenes of 5556×3704 px at 5 m
over Hubei, China, with pixel-level land cover. It has no cloudy images: the pipeline simulates
clouds (``clouds.mode: simulate``) for the "simulated cloud" experiments.

**Bands.**

* ``optical``: GF-1, 4 bands R, G, B, NIR (:data:`raypipe.bands.GF1_BANDS`), uint8 (or uint16).
* ``sar``: GF-3, 1 band (:data:`raypipe.bands.GF3_BANDS`), uint8 (or uint16 / float32).
* ``lbl``: 1 band, codes 0, 10, …, 70.

Normalisation: min-max (optical / 255, SAR clip 0…255 / 255); no published z-score constants.

**Layout on disk**::

    optical/<name>.tif    e.g. optical/NH49E001013.tif
    sar/<name>.tif
    lbl/<name>.tif

Scenes are cut into ``tile_size`` tiles by *windowed reads* (``windowed_reads``: the manifest
records each window's row, col, height, width; the last row / column of windows is flush with the
scene edge), so a training step never fetches a whole 60 MB scene. Sample id:
``<name>_r<row>_c<col>``.

**Labels.** :data:`WHU_CLASSES` background, farmland, city, village, water, forest, road, others
= codes 0, 10, …, 70 → 0…7; any other code → ignore (255).

**Splits.** The release's 80/20 scene split when a split list (test scene names, one per line) is
given as ``split_list``, else a deterministic 80/20 split of the sorted scene names (every fifth
scene is test).

**Source / citation.** Li X. et al., "MCANet: A joint semantic segmentation framework of optical
and SAR images for land use classification", Int. J. Appl. Earth Obs. Geoinf. (JAG), 2022.
Release: github.com/AmberHen/WHU-OPT-SAR-dataset

    prepare("whu-opt-sar", "/data/WHU-OPT-SAR", "whu.parquet", tile_size=256, split_list="test.txt")
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from raypipe import bands as B
from raypipe import raster, storage
from raypipe.data.datasets.base import DatasetSpec, PrepareOptions, Quarantine, register
from raypipe.data.labels import IGNORE_INDEX, apply_lookup, lookup_table
from raypipe.errors import DatasetNotFoundError

# WHU-OPT-SAR labels 0,10,…,70 → 0…7.
WHU_CLASSES: tuple[str, ...] = ("background", "farmland", "city", "village", "water", "forest", "road", "others")
_WHU_LUT = lookup_table({i * 10: i for i in range(len(WHU_CLASSES))}, IGNORE_INDEX)

MODALITIES = ("optical", "sar", "lbl")
_RE = re.compile(r"(?P<mod>optical|sar|lbl)/(?P<name>[^/]+)\.tif$")


def scan(root: str) -> dict[str, dict[str, str]]:
    """scene name → {modality: uri}."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for uri in storage.list_files(root, (".tif",)):
        m = _RE.search(uri.replace("\\", "/"))
        if m:
            groups[m["name"]][m["mod"]] = uri
    return groups


def windows(height: int, width: int, tile: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of ``tile``-sized windows covering the scene (the last row/column flush to the edge)."""
    stride = stride or tile
    rows = list(range(0, max(height - tile, 0) + 1, stride))
    cols = list(range(0, max(width - tile, 0) + 1, stride))
    if rows[-1] + tile < height:
        rows.append(height - tile)
    if cols[-1] + tile < width:
        cols.append(width - tile)
    return [(r, c) for r in rows for c in cols]


def default_test_scenes(names: list[str]) -> set[str]:
    return {n for i, n in enumerate(sorted(names)) if i % 5 == 4}


class WHUOptSar(DatasetSpec):
    """WHU-OPT-SAR (segmentation, windowed reads); see :mod:`raypipe.data.datasets.whu_opt_sar`."""

    def manifest_rows(self, root: str, quarantine: Quarantine, options: PrepareOptions):
        groups = scan(root)
        if not groups:
            raise DatasetNotFoundError(storage.redact(root), "no WHU-OPT-SAR scenes found (expected optical/, sar/, lbl/)")
        if options.split_list:
            test = set(storage.read_bytes(options.split_list).decode().split())
        else:
            test = default_test_scenes(list(groups))
        tile_size = options.tile_size
        rows = []
        for name, mods in sorted(groups.items()):
            missing = [m for m in MODALITIES if m not in mods]
            if missing:
                for m in missing:
                    quarantine.bad(name, f"{root}/{m}/{name}.tif", "missing", f"{m} scene file is missing")
                continue
            prof = raster.read_profile(mods["optical"])
            for r, c in windows(prof.height, prof.width, tile_size):
                rows.append(dict(sample_id=f"{name}_r{r}_c{c}", dataset=self.name,
                                 split="test" if name in test else "train", region=name, scene=name,
                                 patch=f"r{r}_c{c}", optical_uri=mods["optical"], sar_uri=mods["sar"],
                                 label_uri=mods["lbl"], row=r, col=c, height=tile_size, width=tile_size,
                                 optical_bands=prof.bands, sar_bands=len(self.sar_bands)))
        return rows, list(self.classes)

    def map_labels(self, label: np.ndarray) -> np.ndarray:
        """Codes 0, 10, …, 70 → class indices 0…7 (255 = ignore)."""
        return apply_lookup(label, _WHU_LUT)


WHU_OPT_SAR = register(WHUOptSar(
    "whu-opt-sar", "segmentation", optical_bands=B.GF1_BANDS, optical_dtypes=("uint8", "uint16"),
    optical_scale=255.0, sar_bands=B.GF3_BANDS, sar_dtypes=("uint8", "uint16", "float32"), classes=WHU_CLASSES,
    windowed_reads=True, sar_range=(0.0, 255.0)))
