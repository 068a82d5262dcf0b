"""WHU-OPT-SAR scanner (land-cover segmentation; clouds are simulated).

**WHU-OPT-SAR** (Li et al., 2022): 100 scenes of 5556×3704 px at 5 m over Hubei, China: GF-1
optical (4 bands R, G, B, NIR), GF-3 SAR (1 band) and labels 0, 10, …, 70 (background, farmland,
city, village, water, forest, road, others → 0…7). Layout: ``optical/<name>.tif``,
``sar/<name>.tif``, ``lbl/<name>.tif``. It has no cloudy images: the pipeline simulates clouds.

Scenes are cut into tiles by *windowed reads* (the manifest records each window), so a training
step never fetches a whole 60 MB scene. Split: the release's 80/20 scene split when a split list is
given, else a deterministic 80/20 split of the sorted scene names (every fifth scene is test).
"""

from __future__ import annotations

import re
from collections import defaultdict

from raypipe import storage

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
