"""Scene and class structure: the 10 classes and their label codes, class maps, scenes, splits, geo.

A tile has a dominant class (its label) over 60-85 % of its area plus 1-3 smooth blobs of other
classes (:func:`class_map`); tiles are grouped into scenes of adjacent patches sharing a UTM zone,
and whole scenes are held out as test (:func:`plan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from raypipe.synthetic.layout import (
    _DOMAIN_CODE,
    _STREAM_GEO,
    _STREAM_PLAN,
    DOMAINS,
    LAYOUT,
    PIXEL_SIZE_M,
    ROIS,
    SAMPLE_ID_FORMAT,
    TEST_SCENE_FRACTION,
)

# --------------------------------------------------------------------------------------
# Classes and label codes
# --------------------------------------------------------------------------------------

CLASSES: tuple[str, ...] = ("Forest", "Shrubland", "Savanna", "Grassland", "Wetland",
                            "Cropland", "Urban", "Snow/Ice", "Barren", "Water")
# One IGBP code per simplified class (Forest = IGBP 1-5 -> 4 deciduous broadleaf, Shrubland
# 6-7 -> 7 open shrublands, Savanna 8-9 -> 9 savannas, Cropland 12/14 -> 12 croplands).
CLASS_TO_IGBP: dict[str, int] = {"Forest": 4, "Shrubland": 7, "Savanna": 9, "Grassland": 10,
                                 "Wetland": 11, "Cropland": 12, "Urban": 13, "Snow/Ice": 15,
                                 "Barren": 16, "Water": 17}
# Plausible MODIS LCCS codes (LCCS1 land cover, LCCS2 land use, LCCS3 surface hydrology) to
# fill SEN12MS's other three lc bands; labels are derived from the IGBP band only.
CLASS_TO_LCCS: dict[str, tuple[int, int, int]] = {
    "Forest": (14, 10, 10), "Shrubland": (43, 40, 40), "Savanna": (22, 20, 20),
    "Grassland": (31, 30, 30), "Wetland": (31, 30, 50), "Cropland": (31, 36, 30),
    "Urban": (32, 9, 30), "Snow/Ice": (2, 2, 2), "Barren": (1, 1, 1), "Water": (3, 3, 3),
}
LC_BANDS: tuple[str, ...] = ("IGBP", "LCCS-LC", "LCCS-LU", "LCCS-SH")

# --------------------------------------------------------------------------------------
# Tile composition
# --------------------------------------------------------------------------------------

OTHER_CLASSES_PER_TILE = (1, 3)  # inclusive range of blob classes besides the dominant one
OTHER_CLASS_AREA = (0.15, 0.40)  # total area of the blobs -> dominant class covers 60-85 %
# Snow cover is regional: Snow/Ice patches appear only in Snow/Ice tiles' neighbourhoods, i.e. as a
# blob class only in tiles whose dominant class is one of these (mountain / cold-region classes).
# Label shift: the target domain's class prior (class_prior) is skewed, the source's uniform.
TARGET_PRIOR_RATIO = 4.0
SNOW_BLOB_HOSTS: tuple[str, ...] = ("Snow/Ice", "Barren", "Forest")
SNOW_BLOB_WEIGHT = 0.25  # relative weight of Snow/Ice among the candidate blob classes of a host tile
BLOBS_PER_SIDE = 3.0  # smooth-field correlation cells across a tile for the blobs
TEXTURE_CELL_PX = 4.0  # correlation length of the texture fields, in pixels
FIELD_WORK_RES = 64  # smooth fields are computed at most at this resolution, then upsampled

_N_CLASSES = len(CLASSES)
_CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}
_WETLAND, _WATER, _SNOW = _CLASS_INDEX["Wetland"], _CLASS_INDEX["Water"], _CLASS_INDEX["Snow/Ice"]
_LC_TABLE = np.array([(CLASS_TO_IGBP[c], *CLASS_TO_LCCS[c]) for c in CLASSES], dtype=np.uint16).T  # (4, classes)


# --------------------------------------------------------------------------------------
# Plan: scenes, splits, labels, georeferencing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileSpec:
    """Everything a worker needs to render one tile (the rest comes from the seed)."""

    domain: str
    index: int
    scene: int
    patch: int
    split: str
    label: int
    crs: str
    transform: tuple[float, ...]

    @property
    def roi(self) -> str:
        return ROIS[self.domain]

    @property
    def sample_id(self) -> str:
        return SAMPLE_ID_FORMAT.format(roi=self.roi, scene=self.scene, patch=self.patch)

    def path(self, modality: str) -> str:
        return LAYOUT[self.domain][modality].format(roi=self.roi, scene=self.scene, patch=self.patch)


def scene_count(tiles: int, scene_size: int) -> int:
    return math.ceil(tiles / scene_size)


def held_out_scenes(seed: int, domain: str, n_scenes: int) -> list[int]:
    """The held-out scenes (1-based) of a domain: about TEST_SCENE_FRACTION of them, at least one."""
    n_test = min(n_scenes - 1, max(1, round(TEST_SCENE_FRACTION * n_scenes)))
    rng = np.random.default_rng([seed, _STREAM_PLAN, _DOMAIN_CODE[domain]])
    return sorted(int(s) for s in rng.choice(np.arange(1, n_scenes + 1), n_test, replace=False))


def _scene_geo(seed: int, domain: str, scene: int, size: int, scene_size: int, patch: int):
    rng = np.random.default_rng([seed, _STREAM_GEO, _DOMAIN_CODE[domain], scene])
    zone = int(rng.integers(1, 61))
    east = round(float(rng.uniform(250_000, 600_000)), -1)
    north = round(float(rng.uniform(1_000_000, 7_000_000)), -1)
    cols = math.ceil(math.sqrt(scene_size))
    row, col = divmod(patch, cols)
    extent = size * PIXEL_SIZE_M
    transform = (PIXEL_SIZE_M, 0.0, east + col * extent, 0.0, -PIXEL_SIZE_M, north - row * extent)
    return f"EPSG:{32600 + zone}", transform


def class_prior(seed: int, domain: str) -> np.ndarray:
    """Class prior (classes,) of a domain: uniform for the source; for the target a fixed geometric skew,
    the most frequent class TARGET_PRIOR_RATIO times the rarest, ``p_k ~ ratio ** (-rank_k / 9)``,
    with the ranks a permutation drawn from ``seed`` (which classes are rare changes with the seed, the
    amount of label shift does not: total variation 0.185 from uniform for ratio 4)."""
    if domain != "target":
        return np.full(_N_CLASSES, 1.0 / _N_CLASSES)
    ranks = np.random.default_rng([seed, _STREAM_PLAN, _DOMAIN_CODE[domain], 2]).permutation(_N_CLASSES)
    w = TARGET_PRIOR_RATIO ** (-ranks / (_N_CLASSES - 1))
    return w / w.sum()


def _split_labels(prior: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels following ``prior``: every class once when ``n >= classes`` (so every class is present
    in every split), the rest by largest remainder of ``(n - classes) * prior``; fewer tiles than classes
    take the most probable classes (ties by a seeded shuffle)."""
    k = len(prior)
    if n < k:
        order = np.lexsort((rng.random(k), -prior))
        return np.sort(order[:n])
    extra = (n - k) * prior
    counts = np.floor(extra).astype(int)
    rest = n - k - counts.sum()
    counts[np.argsort(-(extra - counts), kind="stable")[:rest]] += 1
    return np.repeat(np.arange(k), counts + 1)


def plan(tiles: int, size: int, seed: int, scene_size: int) -> dict[str, list[TileSpec]]:
    """Tile specs per domain: scene/patch, split, labels (class_prior of the domain, every class in every
    split of >= 10 tiles), CRS and transform."""
    out: dict[str, list[TileSpec]] = {}
    for domain in DOMAINS:
        held_out = set(held_out_scenes(seed, domain, scene_count(tiles, scene_size)))
        scenes = [i // scene_size + 1 for i in range(tiles)]
        splits = ["test" if s in held_out else "train" for s in scenes]
        labels = [0] * tiles
        rng = np.random.default_rng([seed, _STREAM_PLAN, _DOMAIN_CODE[domain], 1])
        prior = class_prior(seed, domain)
        for split in ("train", "test"):
            members = [i for i in range(tiles) if splits[i] == split]
            for i, c in zip(members, rng.permutation(_split_labels(prior, len(members), rng))):
                labels[i] = int(c)
        specs = []
        for i in range(tiles):
            patch = i % scene_size
            crs, transform = _scene_geo(seed, domain, scenes[i], size, scene_size, patch)
            specs.append(TileSpec(domain, i, scenes[i], patch, splits[i], labels[i], crs, transform))
        out[domain] = specs
    return out



def _smooth_field(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (size, size) with correlation length ``cell`` px."""
    work = min(size, FIELD_WORK_RES)
    scale = size / work
    cell_w = max(1.0, cell / scale)
    n = math.ceil(work / cell_w) + 3
    low = rng.standard_normal((n, n)).astype(np.float32)
    if cell_w > 1.0:
        up = ndimage.zoom(low, cell_w, order=3, prefilter=False)
        off = int(cell_w)
        fld = up[off:off + work, off:off + work]
    else:
        fld = low[:work, :work]
    if scale > 1.0:
        fld = ndimage.zoom(fld, size / work, order=1)[:size, :size]
    fld = fld - fld.mean()
    return fld / (fld.std() + 1e-6)


def _unit(fld: np.ndarray) -> np.ndarray:
    """Map a unit-std field to (0, 1) smoothly."""
    return 0.5 * (1.0 + np.tanh(fld))


def _snow_weight(label: int) -> float:
    return SNOW_BLOB_WEIGHT if CLASSES[label] in SNOW_BLOB_HOSTS else 0.0


def class_map(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """(size, size) uint8 class indexes: the dominant ``label`` plus a few smooth blobs of others."""
    lo, hi = OTHER_CLASSES_PER_TILE
    n_other = int(rng.integers(lo, hi + 1))
    candidates = [c for c in range(_N_CLASSES) if c != label]
    weights = np.array([_snow_weight(label) if c == _SNOW else 1.0 for c in candidates])
    others = rng.choice(candidates, n_other, replace=False, p=weights / weights.sum())
    shares = rng.dirichlet(np.ones(n_other)) * rng.uniform(*OTHER_CLASS_AREA)
    cmap = np.full((size, size), label, dtype=np.uint8)
    for cls, share in zip(others, shares):
        fld = _smooth_field(rng, size, size / BLOBS_PER_SIDE)
        k = int(round(share * size * size))
        if k == 0:
            continue
        score = np.where(cmap == label, fld, -np.inf).ravel()  # blobs never eat each other
        cmap.flat[np.argpartition(score, -k)[-k:]] = cls
    return cmap


def render_lc(cmap: np.ndarray) -> np.ndarray:
    """(4, H, W) uint16 SEN12MS lc tile: IGBP, LCCS-LC, LCCS-LU, LCCS-SH."""
    return _LC_TABLE[:, cmap]

