"""Optical (Sentinel-2 L1C-like, 13 bands): class spectra, texture, noise, and the domain gap.

Reflectances are top-of-atmosphere-like, in :data:`raypipe.bands.S2_BANDS` order; tiles are stored
as SEN12MS does (reflectance x 10000, uint16: :func:`to_uint16`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raypipe.bands import S1_BANDS, S2_BANDS, S2_SCALE, band_indexes
from raypipe.synthetic.layout import _STREAM_GAP
from raypipe.synthetic.scene import (
    _N_CLASSES,
    _WATER,
    _WETLAND,
    BLOBS_PER_SIDE,
    CLASSES,
    TEXTURE_CELL_PX,
    _smooth_field,
    _unit,
)

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

GAP_S2_GAIN = 0.06  # |per-band gain - 1| is drawn in [0.5, 1.5] x this, random sign
GAP_S2_OFFSET = 0.006  # |per-band additive offset| (reflectance) likewise
GAP_S2_CLASS_SHIFT = 0.12  # |log factor| per class and spectral region likewise
GAP_S1_SHIFT_DB = 0.6  # |dB shift| per polarisation likewise

_S2_TABLE = np.array([S2_SPECTRA[c] for c in CLASSES], dtype=np.float32).T  # (13, classes)
_OPTICAL_TEXTURE = np.array([OPTICAL_TEXTURE[c] for c in CLASSES], dtype=np.float32)
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



def to_uint16(refl: np.ndarray) -> np.ndarray:
    """Reflectance -> SEN12MS storage (reflectance x 10000, uint16, clipped)."""
    return np.clip(np.rint(refl * S2_SCALE), 0, np.iinfo(np.uint16).max).astype(np.uint16)


