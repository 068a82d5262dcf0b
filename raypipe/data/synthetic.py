"""A generated cloudy-transfer benchmark in the SEN12MS / SEN12MS-CR layouts (DESIGN §7b).

No real SEN12MS is reachable from the build machines, so this module *generates* a
scene-classification task with the structure of the MTTS paper's problem and writes it as
real GeoTIFFs (UTM CRS, 10 m transform) in the official layouts, so that the real readers,
the manifest scanners and the object-store path (``s3://`` through :mod:`raypipe.storage`)
are exercised end to end.

**Results on it are results on this synthetic benchmark, never the paper's numbers.**

The task
--------
* 10 classes, the simplified IGBP names :data:`CLASSES` (Forest … Water). Each tile has a
  dominant class, its label, over 60–85 % of its area, plus 1–3 smooth blobs of other
  classes; the ``lc`` IGBP band holds :data:`CLASS_TO_IGBP` codes, so the usual "argmax of
  simplified-IGBP fractions" rule recovers the label.
* **Optical** (Sentinel-2 L1C-like, 13 bands): a class spectrum (:data:`S2_SPECTRA`: red
  edge and high NIR for vegetation, low NIR water, bright flat urban, very bright visible
  snow with low SWIR, high SWIR barren, wetland = per-pixel mix of marsh vegetation and
  water, cropland / grassland / savanna close but distinguishable), spatial texture,
  per-tile illumination and per-band jitter, pixel noise; B10 (cirrus) stays near zero over
  the ground. Optical is the stronger modality when clear.
* **SAR** (Sentinel-1 GRD-like, VV/VH dB): class backscatter (:data:`S1_BACKSCATTER_DB`:
  water very low, urban very high, forest high VH), texture, a per-tile offset (moisture,
  incidence angle) and multiplicative gamma speckle (:data:`SAR_LOOKS` looks). It separates
  water / urban / forest / snow / barren but confuses cropland, grassland, savanna and
  shrubland: SAR is the weaker modality overall, but unaffected by clouds.
* **Domain gap**: the *source* domain (``ROIs1158_spring``) uses the reference spectra; the
  *target* domain (``ROIs1970_fall``) applies per-band gains and offsets, class-conditional
  spectral shifts (per class, per spectral region: visible, red edge/NIR, SWIR) to S2 and a
  small dB shift to S1. The parameters are drawn from ``seed`` and recorded in
  ``synthetic.json`` (:class:`DomainGap`).
* **Clouds on the target only**: the cloud-free target S2 is passed through
  :func:`raypipe.clouds.simulate.simulate_clouds` with a coverage drawn per tile from
  :class:`raypipe.clouds.simulate.CoverageDistribution` (about a third each clear, partly,
  fully cloudy), both seeded by the tile's sample id and the salt ``synthetic-seed<seed>``
  (recorded as ``clouds.salt``). The simulated cloud mask is written as ground truth. A
  cloudy target tile has no cloud-free reference unless ``with_reference`` is set. Target
  labels (``lc``) exist for evaluation only.

Layout (``<out>`` is a local folder, ``file://`` or ``s3://`` URI)::

    <out>/source/ROIs1158_spring/s1_<scene>/ROIs1158_spring_s1_<scene>_p<patch>.tif   2 x float32  VV, VH dB
    <out>/source/ROIs1158_spring/s2_<scene>/ROIs1158_spring_s2_<scene>_p<patch>.tif   13 x uint16  B1..B12 (incl. B8A, B10), reflectance x 10000
    <out>/source/ROIs1158_spring/lc_<scene>/ROIs1158_spring_lc_<scene>_p<patch>.tif   4 x uint16   IGBP, LCCS-LC, LCCS-LU, LCCS-SH
    <out>/target/ROIs1970_fall_s1/s1_<scene>/ROIs1970_fall_s1_<scene>_p<patch>.tif
    <out>/target/ROIs1970_fall_s2_cloudy/s2_cloudy_<scene>/ROIs1970_fall_s2_cloudy_<scene>_p<patch>.tif
    <out>/target/ROIs1970_fall_s2/s2_<scene>/ROIs1970_fall_s2_<scene>_p<patch>.tif     only with with_reference
    <out>/target/ROIs1970_fall_lc/lc_<scene>/ROIs1970_fall_lc_<scene>_p<patch>.tif     evaluation labels
    <out>/target/ROIs1970_fall_cloudmask/cloudmask_<scene>/ROIs1970_fall_cloudmask_<scene>_p<patch>.tif  1 x uint8 0/1
    <out>/synthetic.json                                                               written last

Tile ``i`` (0-based, per domain) lies in scene ``i // scene_size + 1`` (scenes start at 1)
as patch ``i % scene_size`` (patches start at 0 in each scene); its sample id is
``<ROI>_<scene>_p<patch>``, e.g. ``ROIs1970_fall_12_p7``. All patches of a scene share one
UTM zone (``EPSG:326xx``) and lie on a grid of adjacent tiles; scenes differ. About
:data:`TEST_SCENE_FRACTION` of the scenes of each domain are test scenes (listed in
``synthetic.json`` as ``test_scenes``), the rest train; labels are assigned so that each
split is balanced over the 10 classes (blocks of 10 tiles hold each class once).

Parameters: ``tiles`` per domain (>= 10), tile ``size`` in pixels (>= 16), ``seed``
(>= 0), cloud ``preset`` (thin, thick, fog, shadow), ``scene_size`` (patches per scene; at
least 2 scenes per domain are needed), ``with_reference``, ``workers`` (processes; default
all usable cores). Every tile is a pure function of ``(seed, domain, tile index)`` and the
layout parameters: the output does not depend on ``workers``.

``synthetic.json`` holds the version, the parameters, the classes and their IGBP codes,
the test scenes per domain, per-split class counts, the cloud-coverage summary (clear
< 0.1 <= partly <= 0.9 < full, on the written mask), the domain-gap parameters, the layout
templates and one record per tile (id, scene, patch, split, label, dominant fraction and,
for the target, cloud fraction).

Python::

    from raypipe.data.synthetic import generate
    meta = generate("s3://bucket/synthetic", tiles=2000, size=256, seed=0)

Command line: ``python jobs/make_synthetic.py --out DIR --tiles 2000 --size 256 --seed 0``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import numbers
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from scipy import ndimage

from raypipe import storage
from raypipe.clouds.simulate import CLEAR_MAX, FULL_MIN, PRESETS, CoverageDistribution, simulate_clouds
from raypipe.bands import S1_BANDS, S2_BANDS, S2_SCALE, band_indexes
from raypipe.raster import write_geotiff
from raypipe.errors import ConfigError

SYNTHETIC_VERSION = 1  # bump whenever the content generated for a given seed changes

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
# Optical: top-of-atmosphere-like reflectance per class, in S2_BANDS order
#              B1     B2     B3     B4     B5     B6     B7     B8     B8A    B9     B10    B11    B12
# --------------------------------------------------------------------------------------

S2_SPECTRA: dict[str, tuple[float, ...]] = {
    "Forest":    (0.125, 0.092, 0.078, 0.058, 0.098, 0.215, 0.262, 0.282, 0.292, 0.088, 0.002, 0.145, 0.072),
    "Shrubland": (0.135, 0.110, 0.102, 0.104, 0.132, 0.178, 0.200, 0.214, 0.224, 0.074, 0.002, 0.245, 0.165),
    "Savanna":   (0.132, 0.106, 0.098, 0.092, 0.126, 0.196, 0.228, 0.244, 0.256, 0.080, 0.002, 0.225, 0.140),
    "Grassland": (0.130, 0.100, 0.096, 0.078, 0.122, 0.226, 0.272, 0.292, 0.302, 0.086, 0.002, 0.200, 0.112),
    "Wetland":   (0.126, 0.092, 0.090, 0.066, 0.095, 0.185, 0.225, 0.240, 0.248, 0.072, 0.002, 0.135, 0.068),
    "Cropland":  (0.128, 0.097, 0.104, 0.066, 0.132, 0.280, 0.340, 0.362, 0.372, 0.095, 0.002, 0.212, 0.112),
    "Urban":     (0.152, 0.142, 0.138, 0.142, 0.152, 0.168, 0.178, 0.188, 0.194, 0.070, 0.003, 0.222, 0.192),
    "Snow/Ice":  (0.350, 0.480, 0.470, 0.460, 0.452, 0.440, 0.430, 0.420, 0.410, 0.200, 0.010, 0.050, 0.040),
    "Barren":    (0.160, 0.150, 0.172, 0.210, 0.238, 0.258, 0.270, 0.280, 0.290, 0.100, 0.003, 0.380, 0.330),
    "Water":     (0.128, 0.088, 0.068, 0.044, 0.034, 0.025, 0.022, 0.020, 0.018, 0.008, 0.001, 0.010, 0.007),
}
# Wetland pixels mix its marsh-vegetation spectrum with open water; the water share varies
# smoothly over the tile within this range.
WETLAND_WATER_SHARE = (0.15, 0.65)
# Cirrus band (B10) over the ground: near-zero reflectance, like real L1C tiles.
CIRRUS_BANDS: tuple[str, ...] = ("B10",)
CIRRUS_GROUND_REFLECTANCE = 0.0015
CIRRUS_NOISE = 0.0004
# Spectral regions used by the class-conditional domain shift (B10 is left alone).
S2_SPECTRAL_REGIONS: dict[str, tuple[str, ...]] = {
    "visible": ("B1", "B2", "B3", "B4"),
    "red_edge_nir": ("B5", "B6", "B7", "B8", "B8A", "B9"),
    "swir": ("B11", "B12"),
}
# Relative texture amplitude (std of the multiplicative texture field) per class.
OPTICAL_TEXTURE: dict[str, float] = {
    "Forest": 0.10, "Shrubland": 0.10, "Savanna": 0.12, "Grassland": 0.06, "Wetland": 0.08,
    "Cropland": 0.14, "Urban": 0.25, "Snow/Ice": 0.04, "Barren": 0.08, "Water": 0.03,
}
OPTICAL_TILE_BRIGHTNESS_STD = 0.06  # per-tile illumination / phenology (relative)
OPTICAL_TILE_BAND_JITTER_STD = 0.03  # per-tile, per-band (relative)
OPTICAL_PIXEL_NOISE = 0.004  # additive, reflectance units

# --------------------------------------------------------------------------------------
# SAR: mean backscatter per class, (VV, VH) in dB
# --------------------------------------------------------------------------------------

S1_BACKSCATTER_DB: dict[str, tuple[float, float]] = {
    "Forest": (-7.5, -12.8),
    "Shrubland": (-9.8, -16.6),   # shrubland, savanna, grassland, cropland: within ~1 dB,
    "Savanna": (-9.4, -16.0),     # i.e. confusable once per-tile moisture/incidence
    "Grassland": (-10.4, -17.2),  # variation is added
    "Wetland": (-6.5, -15.0),     # vegetated end-member (double bounce), mixed with water
    "Cropland": (-10.0, -16.9),
    "Urban": (-2.5, -10.0),
    "Snow/Ice": (-13.5, -21.0),
    "Barren": (-16.5, -25.5),
    "Water": (-21.5, -28.5),
}
SAR_TEXTURE_DB: dict[str, float] = {
    "Forest": 1.0, "Shrubland": 1.0, "Savanna": 1.0, "Grassland": 0.7, "Wetland": 1.0,
    "Cropland": 1.5, "Urban": 3.0, "Snow/Ice": 0.8, "Barren": 1.0, "Water": 0.5,
}
SAR_TILE_JITTER_DB = 1.1  # per-tile offset, both polarisations (soil moisture, incidence)
SAR_POL_JITTER_DB = 0.4  # per-tile, per-polarisation
SAR_LOOKS = 4.4  # equivalent number of looks of the gamma speckle (GRD IW ~ 4.4)
SAR_POWER_FLOOR = 1e-5  # linear power floor before dB (-50 dB)

# --------------------------------------------------------------------------------------
# Tile composition, domains, splits, clouds
# --------------------------------------------------------------------------------------

OTHER_CLASSES_PER_TILE = (1, 3)  # inclusive range of blob classes besides the dominant one
OTHER_CLASS_AREA = (0.15, 0.40)  # total area of the blobs -> dominant class covers 60-85 %
BLOBS_PER_SIDE = 3.0  # smooth-field correlation cells across a tile for the blobs
TEXTURE_CELL_PX = 4.0  # correlation length of the texture fields, in pixels
FIELD_WORK_RES = 64  # smooth fields are computed at most at this resolution, then upsampled

GAP_S2_GAIN = 0.06  # |per-band gain - 1| is drawn in [0.5, 1.5] x this, random sign
GAP_S2_OFFSET = 0.006  # |per-band additive offset| (reflectance) likewise
GAP_S2_CLASS_SHIFT = 0.12  # |log factor| per class and spectral region likewise
GAP_S1_SHIFT_DB = 0.6  # |dB shift| per polarisation likewise

TEST_SCENE_FRACTION = 0.2
CLOUD_PRESETS: tuple[str, ...] = tuple(PRESETS)  # thin, thick, fog, shadow
CLEAR_BELOW = CLEAR_MAX  # cloud-fraction buckets (DESIGN §3): clear < 0.1 <= partly <= 0.9 < full
FULL_ABOVE = FULL_MIN

PIXEL_SIZE_M = 10.0
MIN_TILES = 10
MIN_SIZE = 16
CHUNK_TILES = 16  # tiles rendered and written per task
PROGRESS_EVERY_S = 5.0

DOMAINS: tuple[str, ...] = ("source", "target")
ROIS: dict[str, str] = {"source": "ROIs1158_spring", "target": "ROIs1970_fall"}
# Path templates per domain and modality, relative to <out>; {roi}, {scene}, {patch}.
LAYOUT: dict[str, dict[str, str]] = {
    "source": {
        "s1": "source/{roi}/s1_{scene}/{roi}_s1_{scene}_p{patch}.tif",
        "s2": "source/{roi}/s2_{scene}/{roi}_s2_{scene}_p{patch}.tif",
        "lc": "source/{roi}/lc_{scene}/{roi}_lc_{scene}_p{patch}.tif",
    },
    "target": {
        "s1": "target/{roi}_s1/s1_{scene}/{roi}_s1_{scene}_p{patch}.tif",
        "s2_cloudy": "target/{roi}_s2_cloudy/s2_cloudy_{scene}/{roi}_s2_cloudy_{scene}_p{patch}.tif",
        "s2": "target/{roi}_s2/s2_{scene}/{roi}_s2_{scene}_p{patch}.tif",
        "lc": "target/{roi}_lc/lc_{scene}/{roi}_lc_{scene}_p{patch}.tif",
        "cloudmask": "target/{roi}_cloudmask/cloudmask_{scene}/{roi}_cloudmask_{scene}_p{patch}.tif",
    },
}
SAMPLE_ID_FORMAT = "{roi}_{scene}_p{patch}"
METADATA_FILE = "synthetic.json"

# Random streams: every draw is seeded by (seed, stream, domain, index) so tiles are
# independent of each other and of the order or process they are rendered in.
_STREAM_PLAN, _STREAM_TILE, _STREAM_GEO, _STREAM_GAP = 1, 2, 3, 4
_DOMAIN_CODE = {"source": 0, "target": 1}

_N_CLASSES = len(CLASSES)
_CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}
_WETLAND, _WATER = _CLASS_INDEX["Wetland"], _CLASS_INDEX["Water"]
_S2_TABLE = np.array([S2_SPECTRA[c] for c in CLASSES], dtype=np.float32).T  # (13, classes)
_S1_TABLE = np.array([S1_BACKSCATTER_DB[c] for c in CLASSES], dtype=np.float32).T  # (2, classes)
_OPTICAL_TEXTURE = np.array([OPTICAL_TEXTURE[c] for c in CLASSES], dtype=np.float32)
_SAR_TEXTURE = np.array([SAR_TEXTURE_DB[c] for c in CLASSES], dtype=np.float32)
_LC_TABLE = np.array([(CLASS_TO_IGBP[c], *CLASS_TO_LCCS[c]) for c in CLASSES], dtype=np.uint16).T  # (4, classes)
_CIRRUS = band_indexes(S2_BANDS, CIRRUS_BANDS)


# --------------------------------------------------------------------------------------
# Domain gap
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainGap:
    """How the target domain differs from the source (reference) domain.

    S2: ``refl_target = (refl * class_shift[class, region(band)]) * gain[band] + offset[band]``;
    S1: ``dB_target = dB + shift_db[pol]``. All factors are 1 / offsets 0 for the source.
    """

    s2_gain: tuple[float, ...]
    s2_offset: tuple[float, ...]
    s2_class_shift: dict[str, dict[str, float]]  # class -> spectral region -> factor
    s1_shift_db: tuple[float, ...]

    @classmethod
    def draw(cls, seed: int) -> "DomainGap":
        rng = np.random.default_rng([seed, _STREAM_GAP])

        def signed(scale: float, n: int) -> np.ndarray:
            return rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n) * scale

        gain = 1.0 + signed(GAP_S2_GAIN, len(S2_BANDS))
        offset = signed(GAP_S2_OFFSET, len(S2_BANDS))
        for i in _CIRRUS:  # the cirrus band sees no ground: no gap there
            gain[i], offset[i] = 1.0, 0.0
        shift = {}
        for c in CLASSES:  # log-factor per spectral region: seasonal change of this class
            log_factors = signed(GAP_S2_CLASS_SHIFT, len(S2_SPECTRAL_REGIONS))
            shift[c] = {r: float(np.exp(v)) for r, v in zip(S2_SPECTRAL_REGIONS, log_factors)}
        s1 = signed(GAP_S1_SHIFT_DB, len(S1_BANDS))
        return cls(tuple(map(float, gain)), tuple(map(float, offset)), shift, tuple(map(float, s1)))

    def class_factor_table(self) -> np.ndarray:
        """(13, classes) multiplicative factors of the class-conditional shift."""
        table = np.ones((len(S2_BANDS), _N_CLASSES), dtype=np.float32)
        for region, bands in S2_SPECTRAL_REGIONS.items():
            idx = band_indexes(S2_BANDS, bands)
            for c, name in enumerate(CLASSES):
                table[idx, c] = self.s2_class_shift[name][region]
        return table

    def to_json(self) -> dict:
        return {
            "applies_to": "target; the source domain uses the reference spectra and backscatter",
            "s2_formula": "refl * class_shift[class][region(band)] * gain[band] + offset[band]",
            "s2_gain": dict(zip(S2_BANDS, self.s2_gain)),
            "s2_offset": dict(zip(S2_BANDS, self.s2_offset)),
            "s2_spectral_regions": {r: list(b) for r, b in S2_SPECTRAL_REGIONS.items()},
            "s2_class_shift": self.s2_class_shift,
            "s1_shift_db": dict(zip(S1_BANDS, self.s1_shift_db)),
            "magnitudes": {"s2_gain": GAP_S2_GAIN, "s2_offset": GAP_S2_OFFSET,
                           "s2_class_shift_log": GAP_S2_CLASS_SHIFT, "s1_shift_db": GAP_S1_SHIFT_DB},
        }


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


def plan(tiles: int, size: int, seed: int, scene_size: int) -> dict[str, list[TileSpec]]:
    """Tile specs per domain: scene/patch, split, balanced labels, CRS and transform."""
    out: dict[str, list[TileSpec]] = {}
    for domain in DOMAINS:
        held_out = set(held_out_scenes(seed, domain, scene_count(tiles, scene_size)))
        scenes = [i // scene_size + 1 for i in range(tiles)]
        splits = ["test" if s in held_out else "train" for s in scenes]
        labels = [0] * tiles
        rng = np.random.default_rng([seed, _STREAM_PLAN, _DOMAIN_CODE[domain], 1])
        for split in ("train", "test"):  # each block of 10 tiles of a split holds each class once
            members = [i for i in range(tiles) if splits[i] == split]
            for start in range(0, len(members), _N_CLASSES):
                block = members[start:start + _N_CLASSES]
                for i, c in zip(block, rng.permutation(_N_CLASSES)):
                    labels[i] = int(c)
        specs = []
        for i in range(tiles):
            patch = i % scene_size
            crs, transform = _scene_geo(seed, domain, scenes[i], size, scene_size, patch)
            specs.append(TileSpec(domain, i, scenes[i], patch, splits[i], labels[i], crs, transform))
        out[domain] = specs
    return out


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


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


def class_map(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """(size, size) uint8 class indexes: the dominant ``label`` plus a few smooth blobs of others."""
    lo, hi = OTHER_CLASSES_PER_TILE
    n_other = int(rng.integers(lo, hi + 1))
    others = rng.choice([c for c in range(_N_CLASSES) if c != label], n_other, replace=False)
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


def render_optical(rng: np.random.Generator, cmap: np.ndarray, gap: DomainGap | None) -> np.ndarray:
    """Cloud-free (13, H, W) float32 reflectance in [0, 1] for a class map."""
    size = cmap.shape[0]
    refl = _S2_TABLE[:, cmap]
    wet = cmap == _WETLAND
    share = WETLAND_WATER_SHARE[0] + (WETLAND_WATER_SHARE[1] - WETLAND_WATER_SHARE[0]) * _unit(
        _smooth_field(rng, size, size / BLOBS_PER_SIDE))
    if wet.any():
        s = share[wet]
        refl[:, wet] = refl[:, wet] * (1.0 - s) + _S2_TABLE[:, [_WATER]] * s
    if gap is not None:
        refl *= gap.class_factor_table()[:, cmap]
    texture = 1.0 + _OPTICAL_TEXTURE[cmap] * _smooth_field(rng, size, TEXTURE_CELL_PX)
    brightness = rng.normal(1.0, OPTICAL_TILE_BRIGHTNESS_STD)
    jitter = rng.normal(1.0, OPTICAL_TILE_BAND_JITTER_STD, len(S2_BANDS)).astype(np.float32)
    refl *= (texture * brightness)[None] * jitter[:, None, None]
    if gap is not None:
        refl = refl * np.float32(gap.s2_gain)[:, None, None] + np.float32(gap.s2_offset)[:, None, None]
    refl += OPTICAL_PIXEL_NOISE * rng.standard_normal(refl.shape, dtype=np.float32)
    refl[_CIRRUS] = CIRRUS_GROUND_REFLECTANCE + CIRRUS_NOISE * rng.standard_normal(
        (len(_CIRRUS), size, size), dtype=np.float32)
    return np.clip(refl, 0.0, 1.0)


def render_sar(rng: np.random.Generator, cmap: np.ndarray, gap: DomainGap | None) -> np.ndarray:
    """(2, H, W) float32 VV, VH backscatter in dB with texture and gamma speckle."""
    size = cmap.shape[0]
    power = np.power(10.0, _S1_TABLE[:, cmap] / 10.0)
    wet = cmap == _WETLAND
    share = WETLAND_WATER_SHARE[0] + (WETLAND_WATER_SHARE[1] - WETLAND_WATER_SHARE[0]) * _unit(
        _smooth_field(rng, size, size / BLOBS_PER_SIDE))
    if wet.any():
        s = share[wet]
        water = np.power(10.0, _S1_TABLE[:, [_WATER]] / 10.0)
        power[:, wet] = power[:, wet] * (1.0 - s) + water * s
    db = 10.0 * np.log10(power)
    db += _SAR_TEXTURE[cmap] * _smooth_field(rng, size, TEXTURE_CELL_PX)
    db += rng.normal(0.0, SAR_TILE_JITTER_DB) + rng.normal(0.0, SAR_POL_JITTER_DB, (len(S1_BANDS), 1, 1))
    if gap is not None:
        db += np.asarray(gap.s1_shift_db)[:, None, None]
    speckle = rng.gamma(SAR_LOOKS, 1.0 / SAR_LOOKS, size=db.shape)
    power = np.maximum(np.power(10.0, db / 10.0) * speckle, SAR_POWER_FLOOR)
    return (10.0 * np.log10(power)).astype(np.float32)


def render_lc(cmap: np.ndarray) -> np.ndarray:
    """(4, H, W) uint16 SEN12MS lc tile: IGBP, LCCS-LC, LCCS-LU, LCCS-SH."""
    return _LC_TABLE[:, cmap]


def to_uint16(refl: np.ndarray) -> np.ndarray:
    """Reflectance -> SEN12MS storage (reflectance x 10000, uint16, clipped)."""
    return np.clip(np.rint(refl * S2_SCALE), 0, np.iinfo(np.uint16).max).astype(np.uint16)


@dataclass(frozen=True)
class RenderConfig:
    out: str
    size: int
    seed: int
    preset: str
    with_reference: bool
    gap: DomainGap
    cloud_salt: str


@dataclass
class RenderedTile:
    """Arrays of one tile (what gets written), before encoding."""

    spec: TileSpec
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dominant_fraction: float = 0.0
    cloud_fraction: float | None = None


def cloud_salt(seed: int) -> str:
    return f"synthetic-seed{seed}"


def render_tile(spec: TileSpec, cfg: RenderConfig) -> RenderedTile:
    """A pure function of (seed, domain, tile index) and the layout parameters."""
    rng = np.random.default_rng([cfg.seed, _STREAM_TILE, _DOMAIN_CODE[spec.domain], spec.index])
    gap = cfg.gap if spec.domain == "target" else None
    cmap = class_map(rng, spec.label, cfg.size)
    s2 = to_uint16(render_optical(rng, cmap, gap))
    tile = RenderedTile(spec, dominant_fraction=float(np.mean(cmap == spec.label)))
    tile.arrays["s1"] = render_sar(rng, cmap, gap)
    tile.arrays["lc"] = render_lc(cmap)
    if spec.domain == "source":
        tile.arrays["s2"] = s2
        return tile
    coverage = CoverageDistribution().draw(spec.sample_id, salt=cfg.cloud_salt)
    sim = simulate_clouds(s2.astype(np.float32) / S2_SCALE, spec.sample_id, preset=cfg.preset,
                          salt=cfg.cloud_salt, coverage=coverage)
    mask = np.asarray(sim.mask, dtype=bool)
    tile.arrays["s2_cloudy"] = to_uint16(np.asarray(sim.image, dtype=np.float32))
    tile.arrays["cloudmask"] = mask.astype(np.uint8)[None]
    tile.cloud_fraction = float(mask.mean())
    if cfg.with_reference:
        tile.arrays["s2"] = s2
    return tile


def _render_chunk(specs: list[TileSpec], cfg: RenderConfig) -> list[dict]:
    """Render and write a chunk of tiles (runs in a worker process); returns their records."""
    records = []
    for spec in specs:
        tile = render_tile(spec, cfg)
        for modality, array in tile.arrays.items():
            write_geotiff(storage.join(cfg.out, spec.path(modality)), array, crs=spec.crs,
                          transform=spec.transform)
        rec = {"id": spec.sample_id, "domain": spec.domain, "index": spec.index, "scene": spec.scene,
               "patch": spec.patch, "split": spec.split, "label": CLASSES[spec.label],
               "dominant_fraction": round(tile.dominant_fraction, 4)}
        if tile.cloud_fraction is not None:
            rec["cloud_fraction"] = round(tile.cloud_fraction, 4)
        records.append(rec)
    return records


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def default_workers() -> int:
    """Usable cores of this process (respects CPU affinity / container limits when visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _integer(value, flag: str, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(flag, f"must be an integer >= {minimum} ({what}), got {value!r}")
    return int(value)


def validate(tiles: int, size: int, seed: int, workers: int | None, preset: str,
             scene_size: int) -> tuple[int, int, int, int | None, int]:
    """Check the parameters (ConfigError naming the command-line flag); returns them as plain ints."""
    tiles = _integer(tiles, "--tiles", MIN_TILES, "tiles per domain")
    size = _integer(size, "--size", MIN_SIZE, "tile side in pixels")
    seed = _integer(seed, "--seed", 0, "random seed")
    if workers is not None:
        workers = _integer(workers, "--workers", 1, "worker processes")
    if preset not in CLOUD_PRESETS:
        raise ConfigError("--cloud-preset", f"unknown preset {preset!r}; known: {', '.join(CLOUD_PRESETS)}")
    scene_size = _integer(scene_size, "--scene-size", 1, "patches per scene")
    if scene_count(tiles, scene_size) < 2:
        raise ConfigError("--scene-size", f"{scene_size} patches per scene gives a single scene for {tiles} tiles; "
                          f"at least 2 scenes are needed to hold out test scenes (use --scene-size <= {tiles // 2})")
    return tiles, size, seed, workers, scene_size


def _bucket(fraction: float) -> str:
    if fraction < CLEAR_BELOW:
        return "clear"
    return "full" if fraction > FULL_ABOVE else "partly"


def _cloud_summary(records: Iterable[dict]) -> dict:
    out = {s: {"clear": 0, "partly": 0, "full": 0} for s in ("all", "train", "test")}
    fractions = []
    for r in records:
        b = _bucket(r["cloud_fraction"])
        out["all"][b] += 1
        out[r["split"]][b] += 1
        fractions.append(r["cloud_fraction"])
    out["mean_fraction"] = round(float(np.mean(fractions)), 4) if fractions else None
    return out


def _class_counts(records: list[dict]) -> dict:
    return {split: {c: sum(1 for r in records if r["split"] == split and r["label"] == c) for c in CLASSES}
            for split in ("train", "test")}


def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def generate(out: str, tiles: int, size: int, seed: int, workers: int | None = None, preset: str = "thick",
             scene_size: int = 50, with_reference: bool = False, *, quiet: bool = False) -> dict:
    """Generate the benchmark under ``out`` (path or URI); returns the ``synthetic.json`` content.

    ``tiles`` tiles per domain (source and target each), ``size`` x ``size`` pixels, fully
    determined by ``seed``. ``workers`` processes (default: all usable cores; 1 = in this
    process). Progress (tiles done / total, tiles/s) is printed unless ``quiet``.
    """
    tiles, size, seed, workers, scene_size = validate(tiles, size, seed, workers, preset, scene_size)
    workers = workers or default_workers()
    specs = plan(tiles, size, seed, scene_size)
    cfg = RenderConfig(storage.normalize(out), size, seed, preset, with_reference, DomainGap.draw(seed),
                       cloud_salt(seed))
    all_specs = specs["source"] + specs["target"]
    chunk = max(1, min(CHUNK_TILES, math.ceil(len(all_specs) / (4 * workers))))
    chunks = _chunks(all_specs, chunk)
    total = len(all_specs)
    started = last_print = time.monotonic()
    done = 0
    records: list[dict] = []

    def report(n: int, final: bool = False) -> None:
        nonlocal done, last_print
        done += n
        now = time.monotonic()
        if not quiet and (final or now - last_print >= PROGRESS_EVERY_S):
            last_print = now
            rate = done / max(now - started, 1e-9)
            print(f"[synthetic] {done}/{total} tiles ({rate:.1f} tiles/s, {workers} worker(s))", flush=True)

    if not quiet:
        print(f"[synthetic] writing {tiles} source + {tiles} target tiles of {size}x{size} "
              f"to {storage.redact(cfg.out)} with {workers} worker(s)", flush=True)
    if workers == 1:
        for c in chunks:
            records += _render_chunk(c, cfg)
            report(len(c))
    else:
        # spawn: workers start clean (no inherited event loops, locks or Ray state).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            pending = {pool.submit(_render_chunk, c, cfg) for c in chunks}
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        part = fut.result()
                        records += part
                        report(len(part))
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    report(0, final=True)

    records.sort(key=lambda r: (DOMAINS.index(r["domain"]), r["index"]))
    by_domain = {d: [r for r in records if r["domain"] == d] for d in DOMAINS}
    for d in DOMAINS:
        for r in by_domain[d]:
            del r["domain"]
    meta = {
        "version": SYNTHETIC_VERSION,
        "generator": "raypipe.data.synthetic",
        "note": "Generated benchmark (DESIGN 7b). Results on it are results on this synthetic "
                "benchmark, never the paper's numbers.",
        "tiles": tiles,
        "tiles_per": "domain",
        "size": size,
        "seed": seed,
        "preset": preset,
        "scene_size": scene_size,
        "with_reference": with_reference,
        "pixel_size_m": PIXEL_SIZE_M,
        "classes": list(CLASSES),
        "class_to_igbp": dict(CLASS_TO_IGBP),
        "class_to_lccs": {c: list(v) for c, v in CLASS_TO_LCCS.items()},
        "rois": dict(ROIS),
        "bands": {"s1": list(S1_BANDS), "s2": list(S2_BANDS), "lc": list(LC_BANDS), "cloudmask": ["cloud"]},
        "layout": LAYOUT,
        "sample_id_format": SAMPLE_ID_FORMAT,
        "numbering": "tile i of a domain is scene i // scene_size + 1, patch i % scene_size (patches start at 0)",
        "scenes": {d: scene_count(tiles, scene_size) for d in DOMAINS},
        "test_scenes": {d: held_out_scenes(seed, d, scene_count(tiles, scene_size)) for d in DOMAINS},
        "class_counts": {d: _class_counts(by_domain[d]) for d in DOMAINS},
        "clouds": {
            "domain": "target",
            "simulator": "raypipe.clouds.simulate.simulate_clouds",
            "preset": preset,
            "salt": cfg.cloud_salt,
            "coverage": "raypipe.clouds.simulate.CoverageDistribution().draw(sample_id, salt)",
            "buckets": {"clear_below": CLEAR_BELOW, "full_above": FULL_ABOVE},
            "summary": _cloud_summary(by_domain["target"]),
        },
        "domain_gap": cfg.gap.to_json(),
        "samples": by_domain,
    }
    storage.write_bytes(storage.join(cfg.out, METADATA_FILE), json.dumps(meta, indent=1).encode())
    if not quiet:
        elapsed = time.monotonic() - started
        print(f"[synthetic] done: {total} tiles in {elapsed:.1f} s; target clouds "
              f"{meta['clouds']['summary']['all']}; wrote {storage.redact(storage.join(cfg.out, METADATA_FILE))}",
              flush=True)
    return meta
