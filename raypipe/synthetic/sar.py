"""SAR (Sentinel-1 GRD-like, VV/VH in dB): class backscatter, texture, per-tile offsets, speckle.

Informative for water, urban, forest, snow and barren; confusable for cropland, grassland,
savanna and shrubland: the weaker modality overall, blind to clouds, but not to the domain: the
target gets a per-polarisation dB offset and a class-conditional dB shift (DomainGap.s1_*), both
well under the class separation.
"""

from __future__ import annotations

import numpy as np

from raypipe.bands import S1_BANDS
from raypipe.synthetic.scene import (
    _WATER,
    _WETLAND,
    BLOBS_PER_SIDE,
    CLASSES,
    TEXTURE_CELL_PX,
    _smooth_field,
    _unit,
)
from raypipe.synthetic.spectra import WETLAND_WATER_SHARE, DomainGap

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
_S1_TABLE = np.array([S1_BACKSCATTER_DB[c] for c in CLASSES], dtype=np.float32).T  # (2, classes)
_SAR_TEXTURE = np.array([SAR_TEXTURE_DB[c] for c in CLASSES], dtype=np.float32)


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
        db += gap.s1_class_table()[:, cmap]
    speckle = rng.gamma(SAR_LOOKS, 1.0 / SAR_LOOKS, size=db.shape)
    power = np.maximum(np.power(10.0, db / 10.0) * speckle, SAR_POWER_FLOOR)
    return (10.0 * np.log10(power)).astype(np.float32)


