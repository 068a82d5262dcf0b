"""A generated land-cover *segmentation* benchmark in the M3M-CR and WHU-OPT-SAR layouts (CloudSeg).

No real M3M-CR or WHU-OPT-SAR can be downloaded on the build machines, so this module *generates*
a segmentation task with their structure and writes it as real GeoTIFFs (UTM CRS, correct
transforms) in the exact official layouts, so that the real readers
(:mod:`raypipe.data.datasets.m3mcr`, :mod:`raypipe.data.datasets.whu_opt_sar`), ``prepare``,
the pipeline and the object-store path (``s3://`` through :mod:`raypipe.storage`) are exercised
end to end by CloudSeg: a teacher on cloud-free optical + SAR, a student on cloudy optical + SAR,
and the optical-only, SAR-only and early-fusion references.

**Results on it are results on this generated benchmark, never the paper's numbers.**

The task
--------
Per-pixel land cover, one domain (no domain gap: that is the classification benchmark's job,
:mod:`raypipe.synthetic`).

* **Labels.** Smooth random fields cut into regions: for each tile (M3M-CR) or scene (WHU) a set
  of target class shares is drawn, and the regions are the arg-max of one smooth field per class
  (two octaves: regions plus rough borders) with per-class offsets calibrated so that each class
  gets about its share. *M3M-CR*: the 6 CloudSeg classes, written as ESA WorldCover codes: Forest
  10; Rangeland 20 (shrubland) or 30 (grassland) by a second field and a per-AOI grass share;
  Agriculture 40 snapped to rectangular **parcels** (a parcel is cropland when most of it is);
  Urban 50; Barren 60; Water 80 (open water) or 90 (herbaceous wetland, part of CloudSeg's Water).
  A small share (about 1-3 % of label pixels on average) of codes that CloudSeg ignores is mixed
  in so that the ignore mapping is exercised: blobs of 70 (snow), 95 (mangrove) and 100 (moss),
  each with their own spectrum and backscatter, and patches of 0 (no data in the label only; the
  ground under them is whatever it is). *WHU-OPT-SAR*: the 8 classes 0 background, 10 farmland
  (parcels), 20 city (one or two large blocks with an urban fabric), 30 village (many small
  clusters inside farmland), 40 water (lakes and a river), 50 forest, 60 road (**thin lines**,
  10-17 m wide sinuous polylines across the scene), 70 others (bare / construction); every class
  is in every scene.
* **Resolution.** *M3M-CR*: the map is drawn on the 3 m optical grid (the "fine" map), the
  optical is rendered from it, and the 10 m label is the **area majority** of the fine map in
  each label pixel (a 10 m pixel covers 3⅓ × 3⅓ optical pixels; fractions are computed exactly
  with an overlap matrix), so the optical has sub-label-pixel detail at class borders, as real
  3 m imagery does against a 10 m WorldCover map. The 10 m SAR is the area average of the
  fine-grid backscatter *power* (incoherent mixing), then speckled. *WHU-OPT-SAR*: optical, SAR
  and label share the 5 m grid.
* **Optical** (PlanetScope-like B, G, R, NIR surface reflectance; GF-1 for WHU, the same
  reflectances in R, G, B, NIR order): a class reflectance (:data:`PLANET_SPECTRA`,
  :data:`WHU_SPECTRA`: vegetation NIR high and red low, water low NIR, urban bright and flat,
  barren bright and red, snow white), agriculture varying **per parcel** between green crop and
  bare soil (WHU: also flooded paddy), urban with roof brightness per block, streets and garden
  vegetation, texture from multi-octave fields shared across bands through loadings ("albedo" and
  "vigour", the logic and octaves of :mod:`raypipe.synthetic.spectra`), a seasonal shift of
  vegetation vigour, per-AOI gains, per-tile illumination and band jitter, a 0.6 px Gaussian PSF
  and band-correlated noise (the noise constants of :mod:`~raypipe.synthetic.spectra`).
  M3M-CR: uint16 reflectance × 10000 clipped to 1...10000 (0 is the files' nodata). WHU: uint8,
  ``round(255 · reflectance / 0.45)``.
* **SAR.** *M3M-CR*: Sentinel-1 VV, VH in dB (float64, as the release), class backscatter from
  :data:`raypipe.synthetic.sar.S1_BACKSCATTER_DB` mapped to WorldCover (:data:`WORLDCOVER_S1_DB`;
  wetland = 60/40 power mix of the vegetated wetland and open water, mangrove and moss added),
  per-parcel dB offsets on cropland (moisture, roughness, crop state), texture, per-AOI and
  per-tile offsets and gamma speckle (:data:`~raypipe.synthetic.sar.SAR_LOOKS` looks). It
  separates water, urban, forest and barren but confuses rangeland and agriculture (backscatter
  within 0.6 dB, parcel spread 1.5 dB): SAR alone is weaker than clear optical. *WHU*: GF-3-like
  single-band backscatter (:data:`WHU_SAR_DB`: water dark, city very bright and rough, roads
  dark, paddy parcels dark when flooded) with 3-look speckle, stored as uint8
  ``round(255 · (dB + 30) / 35)`` (log-amplitude, -30...+5 dB).
* **Clouds** (M3M-CR only, on the optical only; WHU has none: the pipeline simulates them,
  ``clouds.mode: simulate``). ``planet_cloudy`` is
  :func:`raypipe.clouds.simulate.simulate_clouds` applied to the written cloud-free optical,
  seeded by the sample id and the salt ``segmentation-seed<seed>``, with a coverage drawn per
  sample from :class:`~raypipe.clouds.simulate.CoverageDistribution` (about a third each clear,
  partly and fully cloudy). The image is expressed in units of a thick cloud's reflectance
  (:data:`CLOUD_TOP_REFLECTANCE` × a per-tile brightness in :data:`CLOUD_BRIGHTNESS`, calibrated
  on the real M3M-CR cloudy tiles) before the simulator and scaled back after, so the
  simulator's opaque "white" is a physically plausible cloud (about 0.4-0.65), not reflectance
  1.0. Outside the mask the cloudy optical equals the cloud-free one up to the faint cloud
  fringe the simulator leaves below its mask threshold (opacity <= 5 %); the ``shadow`` preset
  also darkens ground outside the mask. ``cloudmask`` (bool ``.npy`` at the optical resolution)
  stands in for M3M-CR's shipped masks; on this generated data it is *exactly the simulator's
  mask*, so it is more accurate than a real product would be.

Layout (``<out>`` is a local folder, ``file://`` or ``s3://`` URI; write into an empty folder)
------------------------------------------------------------------------------------------------
``layout="m3m-cr"`` (the official one, read by ``prepare("m3m-cr", out, manifest)``)::

    <out>/{train,test}/<mod>_<season>/<mod>_<season>_<aoi>/<mod>_<season>_<aoi>_p_<n>.<ext>
    <out>/segmentation.json                                  written last

    <mod>              bands, dtype                  grid
    planet_cloudfree   4 x uint16 B, G, R, NIR       size x size at 3 m, nodata 0
    planet_cloudy      4 x uint16 B, G, R, NIR       size x size at 3 m, nodata 0
    S1                 2 x float64 VV, VH (dB)       size*3//10 at 10 m
    landcover          1 x uint8 WorldCover codes    size*3//10 at 10 m
    cloudmask          bool .npy (size, size)        optical grid, True = cloud

e.g. ``train/S1_fall/S1_fall_3/S1_fall_3_p_7.tif``. GeoTIFFs are uncompressed and untiled, as the
release's chips.

Tile ``i`` (0-based) is patch ``n = i % scene_size + 1`` of AOI ``i // scene_size + 1``; the AOI's
season cycles spring, summer, fall, winter (AOI 1 spring, 2 summer, …). Sample id (the reader's):
``<season>_<aoi>_p_<n>``. The patches of an AOI share a UTM zone (north or south, drawn from the
seed) and lie on a grid of adjacent tiles; optical and SAR/label transforms share the origin.
About :data:`TEST_AOI_FRACTION` of the AOIs (at least one; drawn from the seed) are ``test``,
the rest ``train``; ``prepare`` then holds out whole training AOIs as ``val``
(:func:`raypipe.data.prepare.carve_val`, 15 %). ``size`` is the optical side (a multiple of 10,
>= 40; real tiles 300), the label / SAR side is ``size * 3 // 10``.

``layout="whu-opt-sar"`` (read by ``prepare("whu-opt-sar", out, manifest, tile_size=T)``)::

    <out>/optical/NH49E0010<nn>.tif    4 x uint8 R,G,B,NIR, 5 m, EPSG:32649
    <out>/sar/NH49E0010<nn>.tif        1 x uint8
    <out>/lbl/NH49E0010<nn>.tif        1 x uint8 codes 0, 10, …, 70
    <out>/segmentation.json

``scenes`` scenes ``NH49E001001`` … of ``scene_height × scene_width`` pixels (real: 3704 × 5556);
the reader's default split makes every fifth sorted scene ``test``, ``carve_val`` takes ``val``
scenes from train (>= 10 scenes give non-empty train, val and test). ``tile_size`` is what
``prepare`` should cut (recorded in ``segmentation.json`` under ``prepare``).

Parameters
----------
``layout`` ("m3m-cr" | "whu-opt-sar"), ``seed`` (>= 0), ``workers`` (processes, default all usable
cores; 1 = in this process; jobs under :data:`POOL_MIN_PIXELS` optical pixels, such as the WHU demo
set, run in this process anyway: starting workers costs more than they save). M3M-CR: ``tiles``,
``size``, ``scene_size`` (patches per AOI; >= 2 AOIs), ``preset`` (cloud preset: thick, thin, fog,
shadow). WHU: ``scenes`` (>= 5), ``scene_height``, ``scene_width``, ``tile_size``. Parameters of the
other layout must be left unset (``None``). Every tile (scene) is a pure function of ``(seed,
layout parameters, tile index)``: the output does not depend on ``workers``. :func:`default_demo`
gives the small CPU default each layout is generated with when a job is given no data (M3M-CR
240 tiles of 100 px, WHU 10 scenes of 300 x 400 px; about 5 s and 1 s on 2 cores).

What to expect (``tests/test_seg_synthetic.py``, demo set, seed 0, test split): a per-pixel
nearest-class-mean classifier at the label grid reaches 0.77 on clear optical, 0.49 on SAR and
0.13-0.19 on cloudy optical under clouds, against 0.23 for always predicting the commonest class.

``segmentation.json`` holds the version, layout, parameters, classes and codes, the band orders,
the layout templates, the per-split tile counts (generator splits and the splits ``prepare``
gives), label pixel counts per split (per code and per class), the cloud-coverage summary (M3M-CR:
buckets clear < 0.1 <= partly <= 0.9 < cloudy, per split, from the written masks), the ``prepare``
call that reads it, and one record per tile (M3M-CR: id, AOI, season, patch, split, cloud
fraction, coverage drawn) or scene (WHU: name, split, pixel counts).

Manifest note: neither reader sets a ``domain`` column; ``prepare`` writes ``""`` for every row
(one domain), which ``carve_val`` and ``DataConfig(domain="")`` treat as one group / no filter.

Python::

    from raypipe.synthetic.segmentation import default_demo, generate_segmentation
    from raypipe.data.prepare import prepare

    meta = generate_segmentation("s3://bucket/m3m-gen", **default_demo("m3m-cr"))
    prepare("m3m-cr", "s3://bucket/m3m-gen", "s3://bucket/m3m-gen.parquet")

    meta = generate_segmentation("data/whu-gen", **default_demo("whu-opt-sar"))
    prepare("whu-opt-sar", "data/whu-gen", "data/whu-gen.parquet", **meta["prepare"]["kwargs"])
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import multiprocessing
import numbers
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import ndimage

from raypipe import storage
from raypipe.bands import GF1_BANDS, GF3_BANDS, PLANET_BANDS, S1_BANDS
from raypipe.clouds.buckets import CLOUD_BUCKETS, cloud_bucket
from raypipe.clouds.simulate import PRESETS, CoverageDistribution, simulate_clouds
from raypipe.data.datasets.m3mcr import CLOUDSEG_CLASSES, WORLDCOVER_TO_CLOUDSEG
from raypipe.data.datasets.whu_opt_sar import WHU_CLASSES, default_test_scenes, windows
from raypipe.data.labels import IGNORE_INDEX
from raypipe.errors import ConfigError
from raypipe.raster import write_geotiff
from raypipe.synthetic.sar import (
    S1_BACKSCATTER_DB,
    SAR_LOOKS,
    SAR_POL_JITTER_DB,
    SAR_POWER_FLOOR,
    SAR_TEXTURE_DB,
    SAR_TILE_JITTER_DB,
)
from raypipe.synthetic.scene import _unit
from raypipe.synthetic.spectra import (
    OPTICAL_NOISE_ADD,
    OPTICAL_NOISE_BAND,
    OPTICAL_NOISE_SHARED,
    OPTICAL_TILE_BAND_JITTER_STD,
    OPTICAL_TILE_BRIGHTNESS_STD,
    TEXTURE_OCTAVES_PX,
    TEXTURE_SLOPE,
)
from raypipe.synthetic.writer import default_workers

SEGMENTATION_VERSION = 1  # bump whenever the content generated for given parameters changes
METADATA_FILE = "segmentation.json"
LAYOUTS: tuple[str, ...] = ("m3m-cr", "whu-opt-sar")
CLOUD_PRESETS: tuple[str, ...] = tuple(PRESETS)
NOTE = ("Generated segmentation benchmark (raypipe.synthetic.segmentation). Results on it are results on this "
        "generated benchmark, never the paper's numbers.")

# --------------------------------------------------------------------------------------
# Layouts, grids, numbering
# --------------------------------------------------------------------------------------

SEASONS: tuple[str, ...] = ("spring", "summer", "fall", "winter")
TEST_AOI_FRACTION = 0.2
M3M_OPTICAL_RES_M = 3.0
M3M_AUX_RES_M = 10.0  # SAR and labels
M3M_MIN_SIZE = 40
M3M_MODALITIES = {"planet_cloudfree": "tif", "planet_cloudy": "tif", "S1": "tif", "landcover": "tif",
                  "cloudmask": "npy"}
M3M_TEMPLATE = "{split}/{mod}_{season}/{mod}_{season}_{aoi}/{mod}_{season}_{aoi}_p_{patch}.{ext}"
M3M_SAMPLE_ID = "{season}_{aoi}_p_{patch}"
WHU_RES_M = 5.0
WHU_EPSG = 32649  # UTM 49N (Hubei)
WHU_SCENE_NAME = "NH49E0010{:02d}"
WHU_TEMPLATE = "{mod}/{name}.tif"
WHU_MIN_SCENES = 5  # the reader's default split makes every fifth sorted scene test
WHU_MIN_SIDE = 64

_DEFAULTS = {
    "m3m-cr": dict(tiles=240, size=100, scene_size=12, preset="thick"),
    "whu-opt-sar": dict(scenes=10, scene_height=300, scene_width=400, tile_size=100),
}

# Random streams: every draw is seeded by (seed, stream, layout, index).
_STREAM_SPLIT, _STREAM_AOI, _STREAM_TILE, _STREAM_GEO, _STREAM_SCENE = 21, 22, 23, 24, 25
_LAYOUT_CODE = {"m3m-cr": 0, "whu-opt-sar": 1}
# Jobs under this many optical pixels run in this process whatever ``workers`` says (see pool_workers).
# Measured on 2 cores: the M3M-CR demo (2.4 Mpx) 4.7-5.2 s with 2 workers vs 5.8-6.2 s in-process; the WHU
# demo (1.2 Mpx) 2.0 s with 2 workers vs 1.0-1.1 s in-process (starting a worker costs about 2 s of imports).
POOL_MIN_PIXELS = 2_000_000

# --------------------------------------------------------------------------------------
# M3M-CR surfaces: ESA WorldCover codes
# --------------------------------------------------------------------------------------

WORLDCOVER_NAMES: dict[int, str] = {
    0: "no data", 10: "Tree cover", 20: "Shrubland", 30: "Grassland", 40: "Cropland", 50: "Built-up",
    60: "Bare / sparse vegetation", 70: "Snow and ice", 80: "Permanent water bodies", 90: "Herbaceous wetland",
    95: "Mangroves", 100: "Moss and lichen",
}
SURFACES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)  # codes with a ground surface
IGNORE_SURFACES: tuple[int, ...] = (70, 95, 100)
NODATA_CODE = 0
# CloudSeg class index -> WorldCover code drawn for its regions (Rangeland and Water get a sub-type).
_CLASS_CODE = np.array([10, 20, 40, 50, 60, 80], dtype=np.uint8)
_RANGE, _AGRI, _URBAN, _WATER = 1, 2, 3, 5

# Surface reflectance (B, G, R, NIR), calibrated on the real M3M-CR tiles in shared/data/real (cloud-free
# medians: tree cover 0.024-0.026 / 0.052-0.055 / 0.045-0.064 / 0.20-0.32, grassland 0.029 / 0.057 /
# 0.084 / 0.20, cropland 0.059 / 0.096 / 0.12 / 0.22) and the usual shapes of the other classes.
PLANET_SPECTRA: dict[int, tuple[float, float, float, float]] = {
    10: (0.025, 0.050, 0.042, 0.280),
    20: (0.038, 0.062, 0.080, 0.215),
    30: (0.032, 0.060, 0.072, 0.250),
    40: (0.050, 0.082, 0.090, 0.290),  # replaced per parcel by a crop / bare-soil mix
    50: (0.080, 0.092, 0.102, 0.160),
    60: (0.105, 0.145, 0.195, 0.255),
    70: (0.800, 0.800, 0.780, 0.700),
    80: (0.045, 0.050, 0.030, 0.012),
    90: (0.035, 0.056, 0.046, 0.165),
    95: (0.022, 0.045, 0.030, 0.210),
    100: (0.055, 0.072, 0.085, 0.185),
}
CROP_GREEN = (0.030, 0.068, 0.042, 0.380)
CROP_BARE = (0.078, 0.108, 0.138, 0.205)
URBAN_STREET = (0.060, 0.068, 0.074, 0.095)
URBAN_VEGETATION = PLANET_SPECTRA[10]
# Texture amplitude (std of the log factor) per surface: (albedo, vigour).
OPTICAL_TEXTURE_AMP: dict[int, tuple[float, float]] = {
    10: (0.14, 0.12), 20: (0.13, 0.08), 30: (0.09, 0.10), 40: (0.09, 0.08), 50: (0.20, 0.04), 60: (0.11, 0.02),
    70: (0.04, 0.00), 80: (0.06, 0.02), 90: (0.09, 0.10), 95: (0.10, 0.10), 100: (0.10, 0.05),
}
# How much a surface's reflectance follows the season's vegetation vigour (0 = not vegetated).
VEGETATION_WEIGHT: dict[int, float] = {10: 1.0, 20: 0.7, 30: 1.0, 40: 0.0, 50: 0.0, 60: 0.1, 70: 0.0, 80: 0.0,
                                       90: 0.7, 95: 1.0, 100: 0.4}
# Texture loadings over (B, G, R, NIR), as spectra.TEXTURE_LOADING's albedo and vigour fields.
TEXTURE_LOADING_4: dict[str, tuple[float, float, float, float]] = {
    "albedo": (0.85, 0.90, 1.00, 0.90),
    "vigour": (-0.40, -0.20, -0.90, 1.00),
}
SEASON_VIGOUR: dict[str, float] = {"spring": -0.05, "summer": 0.05, "fall": -0.10, "winter": -0.25}  # log shift
SEASON_ILLUMINATION: dict[str, float] = {"spring": 1.0, "summer": 1.05, "fall": 0.95, "winter": 0.85}
AOI_BAND_GAIN_STD = 0.04  # per AOI and band (regional soils / atmosphere)
OPTICAL_PSF_SIGMA_PX = 0.6
PLANET_SCALE = 10000.0

# Sentinel-1 (VV, VH) dB per WorldCover code, from the classification benchmark's table.
WORLDCOVER_S1_SOURCE: dict[int, str] = {10: "Forest", 20: "Shrubland", 30: "Grassland", 40: "Cropland", 50: "Urban",
                                        60: "Barren", 70: "Snow/Ice", 80: "Water"}
WETLAND_WATER_POWER_SHARE = 0.4  # herbaceous wetland: power mix of the vegetated wetland and open water


def _s1_table() -> dict[int, tuple[float, float]]:
    table = {c: S1_BACKSCATTER_DB[n] for c, n in WORLDCOVER_S1_SOURCE.items()}
    veg, water = (np.power(10.0, np.array(S1_BACKSCATTER_DB[n]) / 10.0) for n in ("Wetland", "Water"))
    mix = (1 - WETLAND_WATER_POWER_SHARE) * veg + WETLAND_WATER_POWER_SHARE * water
    table[90] = tuple(float(round(v, 2)) for v in 10.0 * np.log10(mix))
    table[95] = (-6.5, -12.0)   # mangroves: forest over water, double bounce raises VV
    table[100] = (-12.0, -19.0)  # moss and lichen: short, sparse
    return table


WORLDCOVER_S1_DB: dict[int, tuple[float, float]] = _s1_table()
WORLDCOVER_S1_TEXTURE_DB: dict[int, float] = {
    10: SAR_TEXTURE_DB["Forest"], 20: SAR_TEXTURE_DB["Shrubland"], 30: SAR_TEXTURE_DB["Grassland"],
    40: SAR_TEXTURE_DB["Cropland"], 50: SAR_TEXTURE_DB["Urban"], 60: SAR_TEXTURE_DB["Barren"],
    70: SAR_TEXTURE_DB["Snow/Ice"], 80: SAR_TEXTURE_DB["Water"], 90: SAR_TEXTURE_DB["Wetland"], 95: 1.0, 100: 0.8,
}
PARCEL_SAR_JITTER_DB = 1.5  # per cropland parcel, both polarisations (moisture, roughness, crop state)
AOI_SAR_JITTER_DB = 0.5
SAR_TEXTURE_CELL_M = 40.0  # correlation length of the backscatter texture

# Composition of an M3M-CR tile.
CLASS_PRIOR = (0.22, 0.20, 0.24, 0.12, 0.08, 0.14)  # Forest, Rangeland, Agriculture, Urban, Barren, Water
AOI_PRIOR_MIX = 0.4  # AOI class weights = (1 - mix) * Dirichlet(AOI_CONCENTRATION * prior) + mix * prior
AOI_CONCENTRATION = 12.0
TILE_CONCENTRATION = 4.0  # tile shares ~ Dirichlet(TILE_CONCENTRATION * AOI weights)
MIN_CLASS_SHARE = 0.03  # tile shares under this are dropped
REGION_CELL_M = 120.0  # correlation length of the class regions
BORDER_ROUGHNESS = 0.35  # weight of the second (4x finer) octave of the class fields
PARCEL_SHORT_M, PARCEL_LONG_M = (30.0, 90.0), (60.0, 240.0)
URBAN_BLOCK_SHORT_M, URBAN_BLOCK_LONG_M = (18.0, 45.0), (24.0, 75.0)
URBAN_VEGETATION_MAX = 0.45
WETLAND_SHARE = (0.0, 0.35)  # of a tile's water
IGNORE_BLOB_PROB = 0.25  # per tile and ignore surface (70, 95, 100)
IGNORE_BLOB_SHARE = (0.005, 0.03)
IGNORE_BLOB_CELL_M = 45.0
NODATA_PROB = 0.3
NODATA_SHARE = (0.005, 0.03)
NODATA_CELL_PX = 3.0  # label pixels

# Clouds: the simulator works in units of a thick cloud's reflectance (B, G, R, NIR). Real M3M-CR cloudy
# tiles, cloud pixels p90: 0.49 / 0.54 / 0.57 / 0.60 (summer), 0.38 / 0.40 / 0.40 / 0.48 (fall).
CLOUD_TOP_REFLECTANCE = (0.50, 0.53, 0.55, 0.58)
CLOUD_BRIGHTNESS = (0.8, 1.15)

# --------------------------------------------------------------------------------------
# WHU-OPT-SAR surfaces: codes 0, 10, ..., 70
# --------------------------------------------------------------------------------------

WHU_CODES: tuple[int, ...] = tuple(10 * i for i in range(len(WHU_CLASSES)))
# (B, G, R, NIR) reflectance; written as GF-1 R, G, B, NIR.
WHU_SPECTRA: dict[int, tuple[float, float, float, float]] = {
    0: (0.060, 0.075, 0.080, 0.200),   # background: mixed, unclassified ground
    10: (0.040, 0.070, 0.060, 0.300),  # farmland: replaced per parcel (crop / paddy water / bare)
    20: (0.110, 0.120, 0.130, 0.170),
    30: (0.100, 0.110, 0.120, 0.160),  # village roofs, mixed with trees
    40: (0.060, 0.068, 0.045, 0.025),  # turbid inland water
    50: (0.030, 0.055, 0.035, 0.290),
    60: (0.100, 0.105, 0.110, 0.125),
    70: (0.120, 0.150, 0.180, 0.230),  # bare land, construction sites
}
WHU_PADDY_WATER = (0.055, 0.065, 0.055, 0.090)
WHU_TEXTURE_AMP: dict[int, tuple[float, float]] = {
    0: (0.15, 0.15), 10: (0.07, 0.08), 20: (0.18, 0.04), 30: (0.15, 0.05), 40: (0.05, 0.02), 50: (0.10, 0.12),
    60: (0.05, 0.02), 70: (0.12, 0.04),
}
WHU_VEGETATION_WEIGHT: dict[int, float] = {0: 0.5, 10: 0.0, 20: 0.0, 30: 0.0, 40: 0.0, 50: 1.0, 60: 0.0, 70: 0.1}
WHU_SAR_DB: dict[int, float] = {0: -11.0, 10: -12.5, 20: -3.0, 30: -6.0, 40: -21.0, 50: -8.0, 60: -15.0, 70: -10.0}
WHU_SAR_TEXTURE_DB: dict[int, float] = {0: 1.5, 10: 1.2, 20: 3.5, 30: 3.0, 40: 0.5, 50: 1.0, 60: 0.8, 70: 1.2}
WHU_SAR_LOOKS = 3.0
WHU_SAR_DB_RANGE = (-30.0, 5.0)  # mapped linearly to 0..255
WHU_OPTICAL_FULL_SCALE = 0.45  # reflectance written as 255
WHU_PADDY_SAR_DB = -18.0  # flooded paddy parcels (specular water surface)
# Scene composition: share ranges of the blob classes (the rest is farmland, then roads on top).
WHU_SHARES: dict[str, tuple[float, float]] = {
    "forest": (0.15, 0.30), "lake": (0.03, 0.07), "city": (0.04, 0.09), "others": (0.02, 0.05),
    "background": (0.02, 0.05), "village": (0.02, 0.05),
}
WHU_ROAD_WIDTH_M = (10.0, 17.0)
WHU_RIVER_WIDTH_M = (25.0, 60.0)
WHU_PARCEL_SHORT_M, WHU_PARCEL_LONG_M = (40.0, 120.0), (80.0, 300.0)


# --------------------------------------------------------------------------------------
# Random fields and geometry
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _bspline_basis(n: int, cell: float) -> np.ndarray:
    """(n, m) cubic B-spline weights of a lattice with spacing ``cell`` px at pixel centres (rows sum to 1).
    Read-only (cached)."""
    m = math.ceil(n / cell) + 4
    t = (np.arange(n, dtype=np.float64) + 0.5) / cell + 1.0  # lattice coordinates; 1 lattice cell of margin
    base = np.floor(t)
    f = t - base
    weights = ((1 - f) ** 3 / 6, (3 * f ** 3 - 6 * f ** 2 + 4) / 6,
               (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6, f ** 3 / 6)
    out = np.zeros((n, m), dtype=np.float32)
    rows = np.arange(n)
    for k, wk in enumerate(weights):
        out[rows, base.astype(int) - 1 + k] += wk
    out.setflags(write=False)
    return out


def _field(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field ``shape`` with correlation length ``cell`` px: white
    lattice noise (spacing ``cell``) through a separable cubic B-spline (the same field as
    ``ndimage.zoom(order=3, prefilter=False)`` of the lattice, as two small matrix products); white
    noise for cells <= 1 px. Any shape, cost ~ its size."""
    h, w = shape
    if cell <= 1.0:
        fld = rng.standard_normal((h, w), dtype=np.float32)
    else:
        by, bx = _bspline_basis(h, float(cell)), _bspline_basis(w, float(cell))
        low = rng.standard_normal((by.shape[1], bx.shape[1]), dtype=np.float32)
        fld = by @ low @ bx.T
    fld = fld - fld.mean()
    return fld / (fld.std() + np.float32(1e-6))


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit-std multi-octave field: octaves TEXTURE_OCTAVES_PX weighted (cell / 32) ** TEXTURE_SLOPE plus a
    3 x 3-smoothed white component (spectra._multiscale_field's recipe, for any shape)."""
    weights = [(c / TEXTURE_OCTAVES_PX[0]) ** TEXTURE_SLOPE for c in TEXTURE_OCTAVES_PX]
    fld = np.zeros(shape, dtype=np.float32)
    for cell, wgt in zip(TEXTURE_OCTAVES_PX, weights):
        fld += np.float32(wgt) * _field(rng, shape, cell)
    fine = ndimage.uniform_filter(rng.standard_normal(shape, dtype=np.float32), 3, mode="reflect")
    fld += np.float32(weights[-1]) * fine / (fine.std() + np.float32(1e-6))
    fld -= fld.mean()
    return fld / (fld.std() + np.float32(1e-6))


def _take(score: np.ndarray, allowed: np.ndarray | None, share: float) -> np.ndarray:
    """Boolean mask of the ``round(share * N)`` highest ``score`` pixels among ``allowed`` ones."""
    flat = score.ravel() if allowed is None else np.where(allowed, score, -np.inf).ravel()
    k = int(round(share * score.size))
    if allowed is not None:
        k = min(k, int(allowed.sum()))
    out = np.zeros(score.shape, dtype=bool)
    if k > 0:
        out.flat[np.argpartition(flat, -k)[-k:]] = True
    return out


def _parcels(rng: np.random.Generator, shape: tuple[int, int], short: tuple[float, float],
             long: tuple[float, float]) -> tuple[np.ndarray, int]:
    """A rectangular partition (field parcels, urban blocks): strips ``short`` px wide (uniform range)
    along a random axis, cut into pieces ``long`` px long. Returns (ids (H, W) int32, count)."""
    transpose = bool(rng.random() < 0.5)
    h, w = (shape[1], shape[0]) if transpose else shape
    ids = np.empty((h, w), dtype=np.int32)
    n, r = 0, 0
    while r < h:
        sh = max(1, int(round(rng.uniform(*short))))
        c = int(-rng.uniform(0, long[1]))  # parcels do not all start at the tile edge
        while c < w:
            ln = max(1, int(round(rng.uniform(*long))))
            ids[r:r + sh, max(c, 0):c + ln] = n
            n += 1
            c += ln
        r += sh
    return (np.ascontiguousarray(ids.T) if transpose else ids), n


def _edges(ids: np.ndarray) -> np.ndarray:
    """Pixels on the lower/right border of their partition cell (1 px wide lines between cells)."""
    e = np.zeros(ids.shape, dtype=bool)
    e[:-1] |= ids[:-1] != ids[1:]
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return e


def _calibrated_argmax(scores: np.ndarray, target: np.ndarray, iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max regions of per-class fields with per-class offsets adjusted so that each class covers
    about its ``target`` share (absent classes get -inf). Returns (class map (H, W), biased scores)."""
    present = target > 0
    bias = np.where(present, 0.0, -np.inf).astype(np.float32)
    k = len(target)
    for _ in range(iterations):
        cls = np.argmax(scores + bias[:, None, None], axis=0)
        share = np.bincount(cls.ravel(), minlength=k) / cls.size
        step = np.clip(0.6 * (np.log(target + 1e-4) - np.log(share + 1e-4)), -1.0, 1.0)
        bias = np.where(present, bias + step, -np.inf).astype(np.float32)
    biased = scores + bias[:, None, None]
    return np.argmax(biased, axis=0), biased


def _overlap_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) area weights of input pixels inside each output pixel (rows sum to 1), for two grids
    over the same extent (M3M-CR: 30 label px over 100 optical px, each label px 3 1/3 optical px)."""
    edges_out = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(n_in)[None, :] + 1)
    w = np.clip(hi - lo, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _area_mean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Area average of (..., H, W) ``x`` onto the coarse grid of overlap matrix ``w``."""
    return w @ x @ w.T


def _stamp_path(mask: np.ndarray, rng: np.random.Generator, width_px: float, wiggle: float) -> None:
    """Draw a sinuous line ``width_px`` wide between two points on different edges of ``mask`` (in place)."""
    h, w = mask.shape

    def edge_point(e: int) -> np.ndarray:
        t = rng.uniform(0.1, 0.9)
        return np.array([(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][e])

    e0, e1 = rng.choice(4, 2, replace=False)
    p0, p1 = edge_point(int(e0)), edge_point(int(e1))
    d = p1 - p0
    length = float(np.hypot(*d))
    normal = np.array([-d[1], d[0]]) / max(length, 1e-6)
    t = np.linspace(0.0, 1.0, int(2 * length) + 2)
    cycles, phase = rng.uniform(0.5, 2.0, 2), rng.uniform(0, 2 * np.pi, 2)
    offset = wiggle * length * (np.sin(2 * np.pi * cycles[0] * t + phase[0])
                                + 0.4 * np.sin(2 * np.pi * 3 * cycles[1] * t + phase[1])) * np.sin(np.pi * t)
    pts = p0[None] + t[:, None] * d[None] + offset[:, None] * normal[None]
    r = width_px / 2.0
    ri = int(math.ceil(r))
    dy, dx = np.mgrid[-ri:ri + 1, -ri:ri + 1]
    keep = dy ** 2 + dx ** 2 <= max(r, 0.5) ** 2
    dy, dx = dy[keep], dx[keep]
    ys = np.rint(pts[:, 0])[:, None].astype(int) + dy[None]
    xs = np.rint(pts[:, 1])[:, None].astype(int) + dx[None]
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    mask[ys[ok], xs[ok]] = True


def _lookup(table: dict[int, tuple | float], codes: tuple[int, ...]) -> np.ndarray:
    """(values, 256) float32 array with ``arr[:, code] = table[code]`` (0 for codes not in ``codes``), so that
    ``arr[:, label_map]`` renders a map of codes."""
    first = table[codes[0]]
    arr = np.zeros((len(first) if isinstance(first, tuple) else 1, 256), dtype=np.float32)
    for c in codes:
        arr[:, c] = table[c]
    return arr


_PLANET = _lookup(PLANET_SPECTRA, SURFACES)
_TEX_AMP = _lookup(OPTICAL_TEXTURE_AMP, SURFACES)
_VEG_W = _lookup(VEGETATION_WEIGHT, SURFACES)
_S1_DB = _lookup(WORLDCOVER_S1_DB, SURFACES)
_S1_TEX = _lookup(WORLDCOVER_S1_TEXTURE_DB, SURFACES)
_WHU_SPEC = _lookup(WHU_SPECTRA, WHU_CODES)
_WHU_TEX = _lookup(WHU_TEXTURE_AMP, WHU_CODES)
_WHU_VEG = _lookup(WHU_VEGETATION_WEIGHT, WHU_CODES)
_WHU_SAR = _lookup(WHU_SAR_DB, WHU_CODES)
_WHU_SAR_TEX = _lookup(WHU_SAR_TEXTURE_DB, WHU_CODES)
_LOADING = np.array([TEXTURE_LOADING_4[f] for f in ("albedo", "vigour")], dtype=np.float32)  # (2, 4)


def _finish_optical(rng: np.random.Generator, refl: np.ndarray, tex_amp: np.ndarray, vigour: np.ndarray,
                    gain: np.ndarray) -> np.ndarray:
    """Texture (albedo, vigour fields with per-pixel amplitudes ``tex_amp`` (2, H, W)), the season's vigour
    shift ``vigour`` (H, W, log units), gains (4,), tile illumination, PSF and band-correlated noise."""
    shape = refl.shape[1:]
    log_tex = np.zeros_like(refl)
    for f in range(2):
        log_tex += _LOADING[f][:, None, None] * (tex_amp[f] * _texture(rng, shape))[None]
    log_tex += _LOADING[1][:, None, None] * vigour[None]
    brightness = rng.normal(1.0, OPTICAL_TILE_BRIGHTNESS_STD)
    jitter = rng.normal(1.0, OPTICAL_TILE_BAND_JITTER_STD, 4).astype(np.float32)
    refl = refl * np.exp(log_tex) * (np.float32(brightness) * jitter * gain.astype(np.float32))[:, None, None]
    refl = ndimage.gaussian_filter(refl, sigma=(0, OPTICAL_PSF_SIGMA_PX, OPTICAL_PSF_SIGMA_PX), mode="reflect")
    shared = rng.standard_normal(shape, dtype=np.float32)
    refl *= 1.0 + OPTICAL_NOISE_SHARED * shared[None] + OPTICAL_NOISE_BAND * rng.standard_normal(
        refl.shape, dtype=np.float32)
    refl += OPTICAL_NOISE_ADD * rng.standard_normal(refl.shape, dtype=np.float32)
    return refl


def _speckle_db(rng: np.random.Generator, power: np.ndarray, looks: float) -> np.ndarray:
    """Gamma speckle (``looks`` looks, unit mean) on linear power, back to dB (floored at -50 dB)."""
    speckled = np.maximum(power * rng.gamma(looks, 1.0 / looks, size=power.shape), SAR_POWER_FLOOR)
    return 10.0 * np.log10(speckled)


# --------------------------------------------------------------------------------------
# M3M-CR: plan and tiles
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class M3MTile:
    """One M3M-CR sample to render: its place in the layout and its georeferencing."""

    index: int
    aoi: int
    patch: int
    season: str
    split: str
    crs: str
    optical_transform: tuple[float, ...]
    aux_transform: tuple[float, ...]

    @property
    def sample_id(self) -> str:
        return M3M_SAMPLE_ID.format(season=self.season, aoi=self.aoi, patch=self.patch)

    def path(self, modality: str) -> str:
        return M3M_TEMPLATE.format(split=self.split, mod=modality, season=self.season, aoi=self.aoi,
                                   patch=self.patch, ext=M3M_MODALITIES[modality])


@dataclass(frozen=True)
class M3MConfig:
    out: str
    size: int
    seed: int
    preset: str
    cloud_salt: str

    @property
    def aux(self) -> int:
        return self.size * 3 // 10


def cloud_salt(seed: int) -> str:
    return f"segmentation-seed{seed}"


def held_out_aois(seed: int, n_aoi: int) -> list[int]:
    """The test AOIs (1-based): about TEST_AOI_FRACTION of them, at least one, never all."""
    n_test = min(n_aoi - 1, max(1, round(TEST_AOI_FRACTION * n_aoi)))
    rng = np.random.default_rng([seed, _STREAM_SPLIT, _LAYOUT_CODE["m3m-cr"]])
    return sorted(int(a) for a in rng.choice(np.arange(1, n_aoi + 1), n_test, replace=False))


def season_of(aoi: int) -> str:
    return SEASONS[(aoi - 1) % len(SEASONS)]


def m3m_plan(tiles: int, size: int, seed: int, scene_size: int) -> list[M3MTile]:
    """Tile specs: AOI / patch numbering, seasons, AOI-level split, UTM CRS and transforms."""
    n_aoi = math.ceil(tiles / scene_size)
    test = set(held_out_aois(seed, n_aoi))
    cols = math.ceil(math.sqrt(scene_size))
    extent = size * M3M_OPTICAL_RES_M
    geo = {}
    out = []
    for i in range(tiles):
        aoi, k = i // scene_size + 1, i % scene_size
        if aoi not in geo:
            g = np.random.default_rng([seed, _STREAM_GEO, _LAYOUT_CODE["m3m-cr"], aoi])
            zone, south = int(g.integers(1, 61)), bool(g.random() < 0.3)
            east = round(float(g.uniform(200_000, 700_000)), -1)
            north = round(float(g.uniform(1_500_000, 8_500_000)), -1)
            geo[aoi] = (f"EPSG:{(32700 if south else 32600) + zone}", east, north)
        crs, east, north = geo[aoi]
        row, col = divmod(k, cols)
        x0, y0 = east + col * extent, north - row * extent
        out.append(M3MTile(i, aoi, k + 1, season_of(aoi), "test" if aoi in test else "train", crs,
                           (M3M_OPTICAL_RES_M, 0.0, x0, 0.0, -M3M_OPTICAL_RES_M, y0),
                           (M3M_AUX_RES_M, 0.0, x0, 0.0, -M3M_AUX_RES_M, y0)))
    return out


def _aoi_params(seed: int, aoi: int) -> dict:
    rng = np.random.default_rng([seed, _STREAM_AOI, _LAYOUT_CODE["m3m-cr"], aoi])
    prior = np.asarray(CLASS_PRIOR, dtype=np.float64)
    weights = (1 - AOI_PRIOR_MIX) * rng.dirichlet(AOI_CONCENTRATION * prior) + AOI_PRIOR_MIX * prior
    return {"weights": weights, "grass_share": float(rng.uniform(0.3, 0.8)),
            "gain": rng.normal(1.0, AOI_BAND_GAIN_STD, 4), "sar_offset": float(rng.normal(0.0, AOI_SAR_JITTER_DB))}


def _m3m_surface(rng: np.random.Generator, size: int, aoi: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """The fine (3 m) surface map of WorldCover codes, its cropland parcel ids and parcel count."""
    shape = (size, size)
    cell = REGION_CELL_M / M3M_OPTICAL_RES_M
    target = rng.dirichlet(TILE_CONCENTRATION * aoi["weights"])
    target = np.where(target >= MIN_CLASS_SHARE, target, 0.0)
    if target.sum() == 0:
        target[int(np.argmax(aoi["weights"]))] = 1.0
    target /= target.sum()
    scores = np.stack([_field(rng, shape, cell) + BORDER_ROUGHNESS * _field(rng, shape, cell / 4)
                       for _ in range(len(CLOUDSEG_CLASSES))])
    cls, biased = _calibrated_argmax(scores, target)
    # Agriculture snapped to parcels: a parcel is cropland where most of it is; elsewhere the next class.
    m = 1.0 / M3M_OPTICAL_RES_M
    parcels, n_par = _parcels(rng, shape, tuple(v * m for v in PARCEL_SHORT_M), tuple(v * m for v in PARCEL_LONG_M))
    agri = cls == _AGRI
    if agri.any():
        area = np.bincount(parcels.ravel(), minlength=n_par)
        share = np.bincount(parcels.ravel(), weights=agri.ravel(), minlength=n_par) / np.maximum(area, 1)
        snap = share[parcels] > 0.5
        others = np.isfinite(biased[[c for c in range(len(target)) if c != _AGRI], 0, 0]).any()
        if others:
            biased[_AGRI] = -np.inf
            second = np.argmax(biased, axis=0)
            cls = np.where(snap, _AGRI, np.where(agri, second, cls))
    surf = _CLASS_CODE[cls]
    sub = _field(rng, shape, cell / 2)
    grass = sub > NormalDist().inv_cdf(1.0 - aoi["grass_share"])
    surf = np.where((cls == _RANGE) & grass, np.uint8(30), surf)
    water = cls == _WATER
    wet = _take(_field(rng, shape, cell / 3), water, rng.uniform(*WETLAND_SHARE) * water.mean())
    surf[wet] = 90
    for code in IGNORE_SURFACES:  # small blobs of surfaces CloudSeg ignores
        if rng.random() < IGNORE_BLOB_PROB:
            blob = _take(_field(rng, shape, IGNORE_BLOB_CELL_M / M3M_OPTICAL_RES_M), None,
                         rng.uniform(*IGNORE_BLOB_SHARE))
            surf[blob] = code
    return surf.astype(np.uint8), parcels, n_par


def _m3m_optical(rng: np.random.Generator, surf: np.ndarray, parcels: np.ndarray, n_par: int, aoi: dict,
                 season: str) -> np.ndarray:
    """Cloud-free (4, H, W) B, G, R, NIR reflectance of a fine surface map."""
    shape = surf.shape
    refl = _PLANET[:, surf].copy()
    vegw = _VEG_W[0, surf].copy()
    crop = surf == 40
    green = rng.beta(1.2, 1.2, n_par).astype(np.float32)[parcels]
    if crop.any():
        g = green[crop]
        refl[:, crop] = (np.array(CROP_BARE, np.float32)[:, None] * (1 - g)
                         + np.array(CROP_GREEN, np.float32)[:, None] * g)
    m = 1.0 / M3M_OPTICAL_RES_M
    blocks, n_blk = _parcels(rng, shape, tuple(v * m for v in URBAN_BLOCK_SHORT_M),
                             tuple(v * m for v in URBAN_BLOCK_LONG_M))
    roof = rng.lognormal(0.0, 0.25, n_blk).astype(np.float32)[blocks]
    garden = URBAN_VEGETATION_MAX * _unit(_field(rng, shape, 6.0)) ** 2
    urban = surf == 50
    if urban.any():
        v = garden[urban]
        refl[:, urban] = (refl[:, urban] * roof[urban]) * (1 - v) + np.array(URBAN_VEGETATION, np.float32)[:, None] * v
        street = urban & _edges(blocks)
        refl[:, street] = np.array(URBAN_STREET, np.float32)[:, None]
        vegw[urban] = v
    tex = _TEX_AMP[:, surf]
    refl = _finish_optical(rng, refl, tex, SEASON_VIGOUR[season] * vegw, aoi["gain"] * SEASON_ILLUMINATION[season])
    return refl


def _m3m_sar(rng: np.random.Generator, surf: np.ndarray, parcels: np.ndarray, n_par: int, aoi: dict,
             w: np.ndarray) -> np.ndarray:
    """(2, aux, aux) float64 VV, VH dB: fine-grid backscatter power area-averaged to 10 m, then speckled."""
    db = _S1_DB[:, surf].copy()
    crop = surf == 40
    offset = rng.normal(0.0, PARCEL_SAR_JITTER_DB, n_par).astype(np.float32)[parcels]
    db[:, crop] += offset[crop]
    db += (_S1_TEX[0, surf] * _field(rng, surf.shape, SAR_TEXTURE_CELL_M / M3M_OPTICAL_RES_M))[None]
    power = _area_mean(w, np.power(np.float32(10.0), db / np.float32(10.0)))
    shift = rng.normal(0.0, SAR_TILE_JITTER_DB) + aoi["sar_offset"] + rng.normal(0.0, SAR_POL_JITTER_DB, (2, 1, 1))
    power = power.astype(np.float64) * np.power(10.0, shift / 10.0)
    return _speckle_db(rng, power, SAR_LOOKS)


def _m3m_label(rng: np.random.Generator, surf: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(aux, aux) uint8 WorldCover label: area majority of the fine map, plus patches of no-data (0)."""
    codes = np.unique(surf)
    frac = np.stack([_area_mean(w, (surf == c).astype(np.float32)) for c in codes])
    label = codes[np.argmax(frac, axis=0)].astype(np.uint8)
    if rng.random() < NODATA_PROB:
        label[_take(_field(rng, label.shape, NODATA_CELL_PX), None, rng.uniform(*NODATA_SHARE))] = NODATA_CODE
    return label


def to_planet_dn(refl: np.ndarray) -> np.ndarray:
    """Reflectance -> PlanetScope storage: uint16 x 10000, clipped to 1..10000 (0 is the files' nodata)."""
    return np.clip(np.rint(refl * PLANET_SCALE), 1, PLANET_SCALE).astype(np.uint16)


def render_m3m_tile(tile: M3MTile, cfg: M3MConfig) -> dict:
    """One M3M-CR sample's arrays (a pure function of the seed, the layout parameters and the tile index):
    ``planet_cloudfree``, ``planet_cloudy`` (4, size, size) uint16; ``S1`` (2, aux, aux) float64;
    ``landcover`` (1, aux, aux) uint8; ``cloudmask`` (size, size) bool; plus ``cloud_fraction`` and
    ``coverage`` (the simulator's target)."""
    rng = np.random.default_rng([cfg.seed, _STREAM_TILE, _LAYOUT_CODE["m3m-cr"], tile.index])
    aoi = _aoi_params(cfg.seed, tile.aoi)
    w = _overlap_matrix(cfg.aux, cfg.size)
    surf, parcels, n_par = _m3m_surface(rng, cfg.size, aoi)
    clear = to_planet_dn(_m3m_optical(rng, surf, parcels, n_par, aoi, tile.season))
    sar = _m3m_sar(rng, surf, parcels, n_par, aoi, w)
    label = _m3m_label(rng, surf, w)
    # Clouds: the simulator on the written cloud-free optical, in units of this tile's cloud-top reflectance.
    top = np.asarray(CLOUD_TOP_REFLECTANCE, np.float32) * np.float32(rng.uniform(*CLOUD_BRIGHTNESS))
    coverage = CoverageDistribution().draw(tile.sample_id, salt=cfg.cloud_salt)
    scaled = clear.astype(np.float32) / np.float32(PLANET_SCALE) / top[:, None, None]
    sim = simulate_clouds(scaled, tile.sample_id, preset=cfg.preset, salt=cfg.cloud_salt, coverage=coverage)
    cloudy = to_planet_dn(sim.image * top[:, None, None])
    mask = np.asarray(sim.mask, dtype=bool)
    return {"planet_cloudfree": clear, "planet_cloudy": cloudy, "S1": sar, "landcover": label[None],
            "cloudmask": mask, "cloud_fraction": float(mask.mean()), "coverage": float(coverage)}


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_m3m_tiles(tiles: list[M3MTile], cfg: M3MConfig) -> list[dict]:
    """Render and write ``tiles`` under ``cfg.out`` in this process (picklable: the process pool's task).
    Returns one record per tile, with its label code counts (``counts``, 256 ints)."""
    records = []
    for t in tiles:
        a = render_m3m_tile(t, cfg)
        for mod in ("planet_cloudfree", "planet_cloudy"):
            write_geotiff(storage.join(cfg.out, t.path(mod)), a[mod], crs=t.crs, transform=t.optical_transform,
                          nodata=0, compress=None)
        for mod in ("S1", "landcover"):  # uncompressed and untiled, as the release's chips
            write_geotiff(storage.join(cfg.out, t.path(mod)), a[mod], crs=t.crs, transform=t.aux_transform,
                          compress=None)
        storage.write_bytes(storage.join(cfg.out, t.path("cloudmask")), _npy_bytes(a["cloudmask"]))
        records.append({"id": t.sample_id, "index": t.index, "aoi": t.aoi, "season": t.season, "patch": t.patch,
                        "split": t.split, "cloud_fraction": round(a["cloud_fraction"], 6),
                        "coverage": round(a["coverage"], 6),
                        "counts": np.bincount(a["landcover"].ravel(), minlength=256).tolist()})
    return records


# --------------------------------------------------------------------------------------
# WHU-OPT-SAR: scenes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WHUScene:
    index: int
    name: str
    height: int
    width: int
    transform: tuple[float, ...]

    def path(self, modality: str) -> str:
        return WHU_TEMPLATE.format(mod=modality, name=self.name)


@dataclass(frozen=True)
class WHUConfig:
    out: str
    seed: int


def whu_plan(scenes: int, height: int, width: int) -> list[WHUScene]:
    """Scene names NH49E001001 … and their 5 m UTM 49N transforms (scenes on a grid, 1 km apart)."""
    out = []
    cols = math.ceil(math.sqrt(scenes))
    for i in range(scenes):
        r, c = divmod(i, cols)
        x0 = 300_000.0 + c * (width * WHU_RES_M + 1000.0)
        y0 = 3_450_000.0 - r * (height * WHU_RES_M + 1000.0)
        out.append(WHUScene(i, WHU_SCENE_NAME.format(i + 1), height, width,
                            (WHU_RES_M, 0.0, x0, 0.0, -WHU_RES_M, y0)))
    return out


def _whu_surface(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """The scene's label codes (H, W) uint8, farmland parcel ids and count. Every class is present."""
    h, w = shape
    m = 1.0 / WHU_RES_M
    lab = np.full(shape, 10, dtype=np.uint8)

    def blobs(code: int, cell_m: float, share: float, rough: float = 0.3) -> None:
        cell = cell_m * m
        score = _field(rng, shape, cell) + rough * _field(rng, shape, cell / 4)
        lab[_take(score, lab == 10, share)] = code

    s = {k: rng.uniform(*v) for k, v in WHU_SHARES.items()}
    blobs(50, 700.0, s["forest"])
    blobs(40, 350.0, s["lake"])
    blobs(20, max(h, w) * WHU_RES_M / 2.5, s["city"], rough=0.15)
    blobs(70, 150.0, s["others"])
    blobs(0, 180.0, s["background"])
    blobs(30, 60.0, s["village"], rough=0.2)
    river = np.zeros(shape, dtype=bool)
    for _ in range(1 + (h + w) // 4000):
        _stamp_path(river, rng, rng.uniform(*WHU_RIVER_WIDTH_M) * m, wiggle=0.06)
    lab[river] = 40
    roads = np.zeros(shape, dtype=bool)
    n_roads = max(2, int(round((h + w) / 175.0 * rng.uniform(0.8, 1.2))))
    for _ in range(n_roads):
        _stamp_path(roads, rng, rng.uniform(*WHU_ROAD_WIDTH_M) * m, wiggle=0.02)
    lab[roads] = 60
    parcels, n_par = _parcels(rng, shape, tuple(v * m for v in WHU_PARCEL_SHORT_M),
                              tuple(v * m for v in WHU_PARCEL_LONG_M))
    return lab, parcels, n_par


def render_whu_scene(scene: WHUScene, cfg: WHUConfig) -> dict:
    """One WHU-OPT-SAR scene (a pure function of the seed, its size and its index): ``optical``
    (4, H, W) uint8 R, G, B, NIR; ``sar`` (1, H, W) uint8; ``lbl`` (1, H, W) uint8 codes 0..70."""
    rng = np.random.default_rng([cfg.seed, _STREAM_SCENE, _LAYOUT_CODE["whu-opt-sar"], scene.index,
                                 scene.height, scene.width])
    shape = (scene.height, scene.width)
    lab, parcels, n_par = _whu_surface(rng, shape)
    m = 1.0 / WHU_RES_M
    # Optical, in (B, G, R, NIR) like the M3M-CR renderer, written as R, G, B, NIR.
    refl = _WHU_SPEC[:, lab].copy()
    vegw = _WHU_VEG[0, lab].copy()
    farm = lab == 10
    state = rng.random(n_par)  # < 0.25 flooded paddy, else crop greenness in [0, 1]
    green = np.clip((state - 0.25) / 0.75, 0, 1).astype(np.float32)[parcels]
    paddy = (state < 0.25)[parcels] & farm
    g = green[farm]
    refl[:, farm] = np.array(CROP_BARE, np.float32)[:, None] * (1 - g) + np.array(CROP_GREEN, np.float32)[:, None] * g
    refl[:, paddy] = np.array(WHU_PADDY_WATER, np.float32)[:, None]
    blocks, n_blk = _parcels(rng, shape, tuple(v * m for v in URBAN_BLOCK_SHORT_M),
                             tuple(v * m for v in URBAN_BLOCK_LONG_M))
    roof = rng.lognormal(0.0, 0.25, n_blk).astype(np.float32)[blocks]
    trees = _unit(_field(rng, shape, 4.0))
    built = (lab == 20) | (lab == 30)
    v = np.where(lab == 30, 0.25 + 0.35 * trees, 0.3 * trees ** 2)[built].astype(np.float32)
    refl[:, built] = refl[:, built] * roof[built] * (1 - v) + np.array(WHU_SPECTRA[50], np.float32)[:, None] * v
    vegw[built] = v
    street = (lab == 20) & _edges(blocks)
    refl[:, street] = np.array(URBAN_STREET, np.float32)[:, None]
    season = SEASONS[int(rng.integers(len(SEASONS)))]
    gain = rng.normal(1.0, AOI_BAND_GAIN_STD, 4) * SEASON_ILLUMINATION[season]
    refl = _finish_optical(rng, refl, _WHU_TEX[:, lab], SEASON_VIGOUR[season] * vegw, gain)
    dn = np.clip(np.rint(refl * (255.0 / WHU_OPTICAL_FULL_SCALE)), 0, 255).astype(np.uint8)
    optical = dn[[2, 1, 0, 3]]  # B, G, R, NIR -> GF-1 R, G, B, NIR
    # SAR: single-band backscatter with parcel effects, texture and 3-look speckle.
    db = _WHU_SAR[0, lab].copy()
    db[farm] += rng.normal(0.0, PARCEL_SAR_JITTER_DB, n_par).astype(np.float32)[parcels][farm]
    db[paddy] = WHU_PADDY_SAR_DB
    db += _WHU_SAR_TEX[0, lab] * _field(rng, shape, 2.0)
    db = db + rng.normal(0.0, SAR_TILE_JITTER_DB)
    sar_db = _speckle_db(rng, np.power(10.0, db.astype(np.float64) / 10.0), WHU_SAR_LOOKS)
    lo, hi = WHU_SAR_DB_RANGE
    sar = np.clip(np.rint((sar_db - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)[None]
    return {"optical": optical, "sar": sar, "lbl": lab[None], "season": season}


def write_whu_scenes(scenes: list[WHUScene], cfg: WHUConfig) -> list[dict]:
    """Render and write ``scenes`` under ``cfg.out`` in this process; one record per scene."""
    records = []
    for s in scenes:
        a = render_whu_scene(s, cfg)
        for mod in ("optical", "sar", "lbl"):
            write_geotiff(storage.join(cfg.out, s.path(mod)), a[mod], crs=f"EPSG:{WHU_EPSG}", transform=s.transform)
        records.append({"name": s.name, "index": s.index, "season": a["season"],
                        "counts": np.bincount(a["lbl"].ravel(), minlength=256).tolist()})
    return records


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def default_demo(layout: str = "m3m-cr") -> dict:
    """Keyword arguments of :func:`generate_segmentation` for the small CPU default of ``layout`` (what a
    job generates when it is given no data): M3M-CR 240 tiles of 100 px optical (30 px labels), 12 per
    AOI (20 AOIs: 4 test, 3 val, 13 train); WHU-OPT-SAR 10 scenes of 300 x 400 px cut into 100 px tiles
    (2 test, 2 val, 6 train scenes). Every split is non-empty and holds every class."""
    if layout not in _DEFAULTS:
        raise ConfigError("--layout", f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    return {"layout": layout, **_DEFAULTS[layout], "seed": 0}


def _integer(value, flag: str, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(flag, f"must be an integer >= {minimum} ({what}), got {value!r}")
    return int(value)


def _validate(layout: str, params: dict, seed, workers) -> dict:
    if layout not in LAYOUTS:
        raise ConfigError("--layout", f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    other = next(lay for lay in LAYOUTS if lay != layout)
    given = [k for k in _DEFAULTS[other] if params.get(k) is not None and k not in _DEFAULTS[layout]]
    if given:
        raise ConfigError("--" + given[0].replace("_", "-"), f"does not apply to layout {layout!r} "
                          f"(it is a {other} parameter)")
    p = {k: (params[k] if params.get(k) is not None else v) for k, v in _DEFAULTS[layout].items()}
    p["seed"] = _integer(seed, "--seed", 0, "random seed")
    p["workers"] = None if workers is None else _integer(workers, "--workers", 1, "worker processes")
    if layout == "m3m-cr":
        p["size"] = _integer(p["size"], "--size", M3M_MIN_SIZE, "optical tile side in pixels")
        if p["size"] % 10:
            raise ConfigError("--size", f"must be a multiple of 10 (10 optical px = 3 label px), got {p['size']}")
        p["scene_size"] = _integer(p["scene_size"], "--scene-size", 1, "patches per AOI")
        p["tiles"] = _integer(p["tiles"], "--tiles", 2, "tiles")
        if math.ceil(p["tiles"] / p["scene_size"]) < 2:
            raise ConfigError("--scene-size", f"{p['scene_size']} patches per AOI gives a single AOI for {p['tiles']} "
                              f"tiles; at least 2 are needed (train and test), 3 for a val split")
        if p["preset"] not in CLOUD_PRESETS:
            raise ConfigError("--cloud-preset", f"unknown preset {p['preset']!r}; known: {', '.join(CLOUD_PRESETS)}")
    else:
        p["scenes"] = _integer(p["scenes"], "--scenes", WHU_MIN_SCENES, "scenes (every fifth sorted one is test)")
        p["tile_size"] = _integer(p["tile_size"], "--tile-size", 16, "tile side prepare cuts")
        side_min = max(WHU_MIN_SIDE, p["tile_size"])
        p["scene_height"] = _integer(p["scene_height"], "--scene-height", side_min, "scene rows, >= tile size")
        p["scene_width"] = _integer(p["scene_width"], "--scene-width", side_min, "scene columns, >= tile size")
    return p


@contextlib.contextmanager
def _single_threaded_children():
    """Worker processes inherit the environment at spawn: one BLAS / OpenMP thread each (``workers``
    processes already use the cores; nested threads only oversubscribe them)."""
    keys = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pool_workers(workers: int, pixels: int) -> int:
    """Processes actually used: 1 (this process) when the job is under :data:`POOL_MIN_PIXELS` optical
    pixels, since starting a worker costs about 2 s of imports; else ``workers``."""
    return 1 if pixels < POOL_MIN_PIXELS else workers


def _run_pool(fn, chunks: list[list], cfg, workers: int) -> list[dict]:
    if workers == 1 or len(chunks) == 1:
        return [r for c in chunks for r in fn(c, cfg)]
    records: list[dict] = []
    ctx = multiprocessing.get_context("spawn")  # workers start clean (no inherited locks or Ray state)
    with _single_threaded_children(), \
            ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
        pending = {pool.submit(fn, c, cfg) for c in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    records += fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return records


def _chunks(items: list, workers: int, cap: int) -> list[list]:
    n = max(1, min(cap, math.ceil(len(items) / (4 * workers))))
    return [items[i:i + n] for i in range(0, len(items), n)]


def prepare_splits(layout: str, scene_splits: dict[str, str]) -> dict[str, str]:
    """scene -> split that ``prepare`` gives (its official train / test, then :func:`carve_val`'s val)."""
    import pandas as pd

    from raypipe.data.prepare import carve_val

    names = sorted(scene_splits)
    df = pd.DataFrame({"dataset": layout, "domain": "", "region": names, "scene": names,
                       "split": [scene_splits[n] for n in names]})
    return dict(zip(names, carve_val(df)["split"]))


def _pixel_counts(records: list[dict], split_of) -> dict:
    """Label pixel counts per split, per code and per class (M3M-CR: CloudSeg classes + ignore)."""
    out = {}
    for split in ("train", "val", "test"):
        total = np.zeros(256, dtype=np.int64)
        for r in records:
            if split_of(r) == split:
                total += np.asarray(r["counts"], dtype=np.int64)
        out[split] = {"codes": {str(c): int(n) for c, n in enumerate(total) if n}}
    return out


def _m3m_class_counts(codes: dict[str, int]) -> dict[str, int]:
    out = {c: 0 for c in (*CLOUDSEG_CLASSES, "ignore")}
    for code, n in codes.items():
        idx = WORLDCOVER_TO_CLOUDSEG.get(int(code), IGNORE_INDEX)
        out["ignore" if idx == IGNORE_INDEX else CLOUDSEG_CLASSES[idx]] += n
    return out


def generate_segmentation(out: str, layout: str = "m3m-cr", tiles: int | None = None, size: int | None = None,
                          seed: int = 0, scene_size: int | None = None, preset: str | None = None,
                          workers: int | None = None, *, scenes: int | None = None, scene_height: int | None = None,
                          scene_width: int | None = None, tile_size: int | None = None,
                          quiet: bool = True) -> dict:
    """Generate the segmentation benchmark in ``layout`` under ``out`` (path, file:// or s3:// URI);
    returns the content of ``segmentation.json`` (written last). Unset parameters take the layout's
    :func:`default_demo` values; parameters of the other layout must stay unset. ``workers`` processes
    (default: all usable cores; 1 = in this process); the files do not depend on it."""
    started = time.monotonic()
    p = _validate(layout, dict(tiles=tiles, size=size, scene_size=scene_size, preset=preset, scenes=scenes,
                               scene_height=scene_height, scene_width=scene_width, tile_size=tile_size), seed, workers)
    workers = p.pop("workers") or default_workers()
    out = storage.normalize(out)
    if not quiet:
        print(f"[segmentation] writing {layout} to {storage.redact(out)} with {workers} worker(s)", flush=True)
    if layout == "m3m-cr":
        meta = _generate_m3m(out, p, workers)
    else:
        meta = _generate_whu(out, p, workers)
    meta["generation_seconds"] = round(time.monotonic() - started, 2)
    storage.write_bytes(storage.join(out, METADATA_FILE), json.dumps(meta, indent=1).encode())
    if not quiet:
        print(f"[segmentation] done in {meta['generation_seconds']} s: tiles per split {meta['tiles_per_split']}",
              flush=True)
    return meta


def _base_meta(layout: str, p: dict) -> dict:
    return {"version": SEGMENTATION_VERSION, "generator": "raypipe.synthetic.segmentation", "note": NOTE,
            "layout": layout, "parameters": dict(p)}


def _generate_m3m(out: str, p: dict, workers: int) -> dict:
    specs = m3m_plan(p["tiles"], p["size"], p["seed"], p["scene_size"])
    cfg = M3MConfig(out, p["size"], p["seed"], p["preset"], cloud_salt(p["seed"]))
    workers = pool_workers(workers, p["tiles"] * p["size"] ** 2)
    records = _run_pool(write_m3m_tiles, _chunks(specs, workers, 16), cfg, workers)
    records.sort(key=lambda r: r["index"])
    aoi_split = {str(t.aoi): t.split for t in specs}
    final = prepare_splits("m3m-cr", aoi_split)
    split_of = lambda r: final[str(r["aoi"])]  # noqa: E731
    pixels = _pixel_counts(records, split_of)
    for v in pixels.values():
        v["classes"] = _m3m_class_counts(v["codes"])
    clouds = {s: {b: 0 for b in CLOUD_BUCKETS} for s in ("all", "train", "val", "test")}
    for r in records:
        b = cloud_bucket(r["cloud_fraction"])
        clouds["all"][b] += 1
        clouds[split_of(r)][b] += 1
    n_aoi = math.ceil(p["tiles"] / p["scene_size"])
    meta = _base_meta("m3m-cr", p)
    meta.update({
        "dataset": "m3m-cr",
        "classes": list(CLOUDSEG_CLASSES),
        "worldcover_codes": {str(c): n for c, n in WORLDCOVER_NAMES.items()},
        "worldcover_to_cloudseg": {str(c): (CLOUDSEG_CLASSES[i] if i != IGNORE_INDEX else "ignore")
                                   for c, i in WORLDCOVER_TO_CLOUDSEG.items()} | {"0": "ignore"},
        "ignore_codes": [NODATA_CODE, *IGNORE_SURFACES],
        "bands": {"planet_cloudfree": list(PLANET_BANDS), "planet_cloudy": list(PLANET_BANDS), "S1": list(S1_BANDS),
                  "landcover": ["WorldCover"], "cloudmask": ["cloud"]},
        "dtypes": {"planet_cloudfree": "uint16", "planet_cloudy": "uint16", "S1": "float64", "landcover": "uint8",
                   "cloudmask": "bool (.npy)"},
        "pixel_size_m": {"optical": M3M_OPTICAL_RES_M, "S1": M3M_AUX_RES_M, "landcover": M3M_AUX_RES_M},
        "label_size": p["size"] * 3 // 10,
        "layout_template": M3M_TEMPLATE,
        "sample_id_format": M3M_SAMPLE_ID,
        "numbering": "tile i is patch i % scene_size + 1 of AOI i // scene_size + 1; season of AOI a: "
                     "(spring, summer, fall, winter)[(a - 1) % 4]",
        "aois": n_aoi,
        "test_aois": held_out_aois(p["seed"], n_aoi),
        "val_aois": sorted(int(a) for a, s in final.items() if s == "val"),
        "tiles_per_split": {"generated": {s: sum(1 for t in specs if t.split == s) for s in ("train", "test")},
                            **{s: sum(1 for r in records if split_of(r) == s) for s in ("train", "val", "test")}},
        "pixel_counts": pixels,
        "clouds": {"on": "planet_cloudy only", "simulator": "raypipe.clouds.simulate.simulate_clouds",
                   "preset": p["preset"], "salt": cfg.cloud_salt,
                   "coverage": "raypipe.clouds.simulate.CoverageDistribution().draw(sample_id, salt)",
                   "cloud_top_reflectance": list(CLOUD_TOP_REFLECTANCE), "cloud_brightness": list(CLOUD_BRIGHTNESS),
                   "mask": "cloudmask .npy = the simulator's mask (stands in for M3M-CR's shipped masks)",
                   "buckets": "clear < 0.1 <= partly <= 0.9 < cloudy (raypipe.clouds.buckets)",
                   "summary": clouds,
                   "mean_fraction": round(float(np.mean([r["cloud_fraction"] for r in records])), 4)},
        "prepare": {"dataset": "m3m-cr", "kwargs": {}},
        "manifest_domain": "",
        "samples": [{k: v for k, v in r.items() if k != "counts"} | {"prepare_split": split_of(r)} for r in records],
    })
    return meta


def _generate_whu(out: str, p: dict, workers: int) -> dict:
    specs = whu_plan(p["scenes"], p["scene_height"], p["scene_width"])
    cfg = WHUConfig(out, p["seed"])
    workers = pool_workers(workers, p["scenes"] * p["scene_height"] * p["scene_width"])
    records = _run_pool(write_whu_scenes, _chunks(specs, workers, 4), cfg, workers)
    records.sort(key=lambda r: r["index"])
    test = default_test_scenes([s.name for s in specs])
    final = prepare_splits("whu-opt-sar", {s.name: ("test" if s.name in test else "train") for s in specs})
    split_of = lambda r: final[r["name"]]  # noqa: E731
    pixels = _pixel_counts(records, split_of)
    for v in pixels.values():
        v["classes"] = {name: v["codes"].get(str(code), 0) for name, code in zip(WHU_CLASSES, WHU_CODES)}
    n_win = len(windows(p["scene_height"], p["scene_width"], p["tile_size"]))
    meta = _base_meta("whu-opt-sar", p)
    meta.update({
        "dataset": "whu-opt-sar",
        "classes": list(WHU_CLASSES),
        "codes": {str(code): name for name, code in zip(WHU_CLASSES, WHU_CODES)},
        "bands": {"optical": list(GF1_BANDS), "sar": list(GF3_BANDS), "lbl": ["class code"]},
        "dtypes": {"optical": "uint8", "sar": "uint8", "lbl": "uint8"},
        "pixel_size_m": WHU_RES_M,
        "crs": f"EPSG:{WHU_EPSG}",
        "optical_scaling": f"round(255 * reflectance / {WHU_OPTICAL_FULL_SCALE})",
        "sar_scaling": f"round(255 * (dB - {WHU_SAR_DB_RANGE[0]}) / {WHU_SAR_DB_RANGE[1] - WHU_SAR_DB_RANGE[0]})",
        "layout_template": WHU_TEMPLATE,
        "clouds": "none written: the pipeline simulates them (clouds.mode: simulate)",
        "scene_splits": final,
        "tiles_per_split": {"tile_size": p["tile_size"], "windows_per_scene": n_win,
                            **{s: n_win * sum(1 for r in records if split_of(r) == s)
                               for s in ("train", "val", "test")}},
        "pixel_counts": pixels,
        "pixel_counts_note": "whole scenes (prepare's flush-edge windows overlap)",
        "prepare": {"dataset": "whu-opt-sar", "kwargs": {"tile_size": p["tile_size"]}},
        "manifest_domain": "",
        "samples": [{"name": r["name"], "index": r["index"], "season": r["season"], "split": split_of(r),
                     "counts": {str(c): n for c, n in enumerate(r["counts"]) if n}} for r in records],
    })
    return meta


__all__ = [
    "CLOUD_PRESETS", "CLOUD_TOP_REFLECTANCE", "LAYOUTS", "METADATA_FILE", "PLANET_SPECTRA", "POOL_MIN_PIXELS",
    "SEASONS", "SEGMENTATION_VERSION", "WHU_SAR_DB", "WHU_SPECTRA", "WORLDCOVER_S1_DB", "M3MConfig", "M3MTile",
    "WHUConfig", "WHUScene", "cloud_salt", "default_demo", "generate_segmentation", "held_out_aois", "m3m_plan",
    "pool_workers", "prepare_splits", "render_m3m_tile", "render_whu_scene", "whu_plan", "write_m3m_tiles",
    "write_whu_scenes",
]
