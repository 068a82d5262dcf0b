"""Optical (Sentinel-2 L1C-like, 13 bands): class spectra, texture, noise, and the domain gap.

Reflectances are top-of-atmosphere-like, in :data:`raypipe.bands.S2_BANDS` order; tiles are stored
as SEN12MS does (reflectance x 10000, uint16: :func:`to_uint16`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from raypipe.bands import S1_BANDS, S2_BANDS, S2_SCALE, band_indexes
from raypipe.synthetic.layout import _STREAM_GAP
from raypipe.synthetic.scene import (
    _N_CLASSES,
    _WATER,
    _WETLAND,
    BLOBS_PER_SIDE,
    CLASSES,
    _smooth_field,
    _unit,
)

# --------------------------------------------------------------------------------------
# Optical: top-of-atmosphere (L1C) reflectance per class, in S2_BANDS order
#
# Sources: the band medians of the two real cloud-free SEN12MS-CR tiles (DESIGN 7b: fall B1 1594,
# B2 1333, B4 1240, B8 1815, B8A 1981, B9 1106, B10 31, B11 1812, B12 1312; winter B1 1432, B2 1135,
# B4 791, B8 2245, B8A 2580, B9 648, B10 13, B11 1822, B12 993) and the published SEN12MS land-band
# means (DESIGN 2: B2 1226, B3 1137, B4 1140, B5 1351, B6 1933, B7 2211, B8 2155, B8A 2409, B11 2002,
# B12 1356). These are L1C values, i.e. they include the atmosphere: the aerosol band B1 is
# dominated by path radiance (0.13-0.16 over land, barely following the ground), B8A exceeds B8 by
# ~5-15 % over vegetation, the water-vapour band B9 is 25-55 % of B8A (scaled per tile by the
# water-vapour column, OPTICAL_WATER_VAPOUR), and the cirrus band B10 sees no ground: 8-30 (x 1e-4)
# over clear land. Snow is bright in the visible and dark in SWIR (NDSI > 0.8), bright desert is
# the brightest non-snow class in SWIR.
#              B1     B2     B3     B4     B5     B6     B7     B8     B8A    B9     B10     B11    B12
# --------------------------------------------------------------------------------------

S2_SPECTRA: dict[str, tuple[float, ...]] = {
    "Forest":    (0.128, 0.095, 0.083, 0.065, 0.100, 0.200, 0.250, 0.262, 0.282, 0.092, 0.0014, 0.150, 0.080),
    "Shrubland": (0.138, 0.113, 0.110, 0.130, 0.155, 0.185, 0.200, 0.210, 0.226, 0.082, 0.0018, 0.260, 0.190),
    "Savanna":   (0.135, 0.106, 0.103, 0.110, 0.140, 0.195, 0.220, 0.230, 0.246, 0.086, 0.0017, 0.240, 0.160),
    "Grassland": (0.133, 0.101, 0.099, 0.090, 0.130, 0.220, 0.260, 0.275, 0.292, 0.094, 0.0016, 0.220, 0.130),
    "Wetland":   (0.131, 0.097, 0.092, 0.080, 0.110, 0.190, 0.230, 0.240, 0.256, 0.080, 0.0014, 0.150, 0.085),
    "Cropland":  (0.131, 0.099, 0.101, 0.080, 0.135, 0.270, 0.330, 0.345, 0.366, 0.110, 0.0015, 0.220, 0.125),
    "Urban":     (0.152, 0.131, 0.129, 0.145, 0.155, 0.170, 0.180, 0.190, 0.196, 0.076, 0.0020, 0.210, 0.180),
    "Snow/Ice":  (0.560, 0.600, 0.580, 0.560, 0.545, 0.530, 0.515, 0.500, 0.480, 0.200, 0.0030, 0.050, 0.040),
    "Barren":    (0.171, 0.158, 0.200, 0.250, 0.280, 0.300, 0.315, 0.325, 0.340, 0.120, 0.0025, 0.420, 0.360),
    "Water":     (0.112, 0.082, 0.063, 0.042, 0.040, 0.030, 0.027, 0.024, 0.022, 0.009, 0.0008, 0.009, 0.006),
}
# Wetland pixels mix its marsh-vegetation spectrum with open water; the water share varies
# smoothly over the tile within this range.
WETLAND_WATER_SHARE = (0.15, 0.65)
# Cirrus band (B10): kept out of the domain gap's gains/offsets (it sees the atmosphere, not the
# ground); its clear-ground level is the class value times a per-tile factor (upper-air humidity).
CIRRUS_BANDS: tuple[str, ...] = ("B10",)
# Spectral regions used by the class-conditional domain shift. B10 is left alone; the aerosol band B1,
# mostly path radiance, gets the visible factor to the power S2_B1_SURFACE_SHARE (its ground share).
S2_SPECTRAL_REGIONS: dict[str, tuple[str, ...]] = {
    "visible": ("B2", "B3", "B4"),
    "red_edge_nir": ("B5", "B6", "B7", "B8", "B8A", "B9"),
    "swir": ("B11", "B12"),
}

S2_B1_SURFACE_SHARE = 0.3
# Central wavelengths (nm), for the smooth spectral tilt of the domain gap.
S2_WAVELENGTH_NM: dict[str, float] = {"B1": 443, "B2": 490, "B3": 560, "B4": 665, "B5": 705, "B6": 740, "B7": 783,
                                      "B8": 842, "B8A": 865, "B9": 945, "B10": 1375, "B11": 1610, "B12": 2190}

# Texture: three multi-scale latent fields per tile, shared by all bands through per-band loadings,
# so that texture is correlated across bands as on real tiles (there B2-B4 r = 0.76-0.93, B11-B12
# r = 0.93-0.97, B8-B11 r = 0.77-0.84, B2-B8 r ~ 0.2):
#   albedo     all bands together (soil brightness, roofs, canopy gaps);
#   vigour     NIR / red edge up, red and blue down (greener vegetation);
#   moisture   SWIR down, B12 most (wetter soil or leaves).
# refl *= exp(amp[class, field] * loading[field, band] * field); every field is a sum of octaves
# with correlation lengths TEXTURE_OCTAVES_PX (weight (cell / 32) ** TEXTURE_SLOPE) plus a
# full-resolution component, normalised to unit std: texture at every scale, as on real tiles.
TEXTURE_FIELDS: tuple[str, ...] = ("albedo", "vigour", "moisture")
TEXTURE_OCTAVES_PX: tuple[float, ...] = (32.0, 16.0, 8.0, 4.0, 2.0)
TEXTURE_SLOPE = 0.5
#                     B1    B2    B3    B4    B5    B6    B7    B8    B8A   B9    B10   B11   B12
TEXTURE_LOADING: dict[str, tuple[float, ...]] = {
    "albedo":   (0.25, 0.80, 0.90, 1.00, 1.00, 0.90, 0.90, 0.90, 0.90, 0.60, 0.00, 1.00, 1.00),
    "vigour":   (-0.1, -0.4, -0.2, -0.9, -0.3, 0.60, 0.90, 1.00, 1.00, 0.70, 0.00, -0.2, -0.5),
    "moisture": (0.00, 0.00, 0.00, 0.00, 0.00, 0.00, -0.1, -0.1, -0.1, -0.1, 0.00, -0.9, -1.0),
}
# Relative amplitude (std of the log factor) of each texture field per class.
OPTICAL_TEXTURE: dict[str, tuple[float, float, float]] = {
    "Forest": (0.08, 0.10, 0.05), "Shrubland": (0.10, 0.08, 0.06), "Savanna": (0.11, 0.10, 0.06),
    "Grassland": (0.06, 0.10, 0.05), "Wetland": (0.07, 0.10, 0.08), "Cropland": (0.10, 0.18, 0.08),
    "Urban": (0.22, 0.06, 0.04), "Snow/Ice": (0.04, 0.00, 0.05), "Barren": (0.08, 0.02, 0.06),
    "Water": (0.05, 0.03, 0.03),
}
# Native resolution of each band (m): SEN12MS resamples every band to 10 m, so the 20 m and 60 m
# bands are smooth at 10 m. Each band is box-filtered over native / 10 pixels before noise.
S2_NATIVE_RESOLUTION_M: dict[str, int] = {
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
    "B9": 60, "B10": 60, "B11": 20, "B12": 20,
}
OPTICAL_TILE_BRIGHTNESS_STD = 0.05  # per-tile illumination / phenology (relative)
OPTICAL_TILE_BAND_JITTER_STD = 0.02  # per-tile, per-band (relative)
OPTICAL_AEROSOL = (0.0, 0.012)  # per-tile path radiance added to B1 (x 1), B2 (x 0.6), B3 (x 0.35), B4 (x 0.2)
OPTICAL_WATER_VAPOUR = (0.6, 1.4)  # per-tile factor on B9 (water-vapour column)
OPTICAL_CIRRUS_FACTOR = (0.6, 1.8)  # per-tile factor on the clear-ground B10 level
# Pixel noise, correlated across bands: a shared relative component (one field for all bands:
# residual sub-pixel texture) plus independent per-band relative and additive parts (detector).
OPTICAL_NOISE_SHARED = 0.012
OPTICAL_NOISE_BAND = 0.004
OPTICAL_NOISE_ADD = 0.0008  # reflectance units

# Clouds on the target domain: the simulator (raypipe.clouds.simulate) gives, per pixel and band,
# the cloud opacity c_b and the ground's transmission (1 - c_b, times the shadow where it casts
# one); the generator blends the ground with the reflectance of an optically thick low/mid-level
# water cloud instead of the simulator's white (1.0 in every band, cirrus included):
#     out_b = ground_b * transmission_b + CLOUD_SPECTRUM_b * brightness * c_b
# Sources: the cloudy real SEN12MS-CR tile (cloud pixels: B2 p50 0.19 / p90 0.39, B10 p50 0.0011 /
# p90 0.0015, B9 well under NIR) and the usual TOA reflectance of thick cumulus / stratus (0.3-0.6
# in the visible and NIR, lower in SWIR where water droplets absorb, B9 and B10 dark from the water
# vapour above and in the cloud). ``brightness`` is drawn per tile in CLOUD_BRIGHTNESS.
#                 B1     B2     B3     B4     B5     B6     B7     B8     B8A    B9     B10    B11    B12
CLOUD_SPECTRUM = (0.440, 0.420, 0.410, 0.410, 0.420, 0.430, 0.440, 0.440, 0.450, 0.140, 0.006, 0.330, 0.230)
CLOUD_BRIGHTNESS = (0.85, 1.3)

GAP_S2_GAIN = 0.04  # |spectral tilt of the gains| (band-to-band part: a quarter of it), [0.5, 1.5] x this, random sign
GAP_S2_GAIN_LEVEL = 0.03  # |common part of the gains| likewise (brightness change over all bands)
GAP_S2_OFFSET = 0.006  # |per-band additive offset| (reflectance) likewise
GAP_S2_CLASS_SHIFT = 0.12  # |log factor| per class and spectral region likewise
GAP_S1_SHIFT_DB = 0.6  # |dB shift| per polarisation likewise (all classes: calibration, incidence angle)
GAP_S1_CLASS_SHIFT_DB = 0.6  # |dB shift| per class and polarisation likewise (soil moisture, phenology, flooding)

_S2_TABLE = np.array([S2_SPECTRA[c] for c in CLASSES], dtype=np.float32).T  # (13, classes)
_TEXTURE_AMP = np.array([OPTICAL_TEXTURE[c] for c in CLASSES], dtype=np.float32)  # (classes, fields)
_TEXTURE_LOADING = np.array([TEXTURE_LOADING[f] for f in TEXTURE_FIELDS], dtype=np.float32)  # (fields, 13)
_CIRRUS = band_indexes(S2_BANDS, CIRRUS_BANDS)
_B = {b: i for i, b in enumerate(S2_BANDS)}
_AEROSOL_WEIGHT = {"B1": 1.0, "B2": 0.6, "B3": 0.35, "B4": 0.2}
_WAVELENGTH_NM = np.array([S2_WAVELENGTH_NM[b] for b in S2_BANDS], dtype=np.float64)
_ATMOSPHERIC = band_indexes(S2_BANDS, ("B9", "B10"))
_CLOUD = np.array(CLOUD_SPECTRUM, dtype=np.float32)


# --------------------------------------------------------------------------------------
# Domain gap
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainGap:
    """How the target domain differs from the source (reference) domain.

    S2: ``refl_target = (refl * class_shift[class, region(band)]) * gain[band] + offset[band]``;
    S1: ``dB_target = dB + shift_db[pol] + class_shift_db[class][pol]`` (SAR has a domain gap of its
    own, smaller than its class separation: a per-domain offset and a class-conditional shift). All factors are 1 / offsets 0 for the source.
    """

    s2_gain: tuple[float, ...]
    s2_offset: tuple[float, ...]
    s2_class_shift: dict[str, dict[str, float]]  # class -> spectral region -> factor
    s1_shift_db: tuple[float, ...]
    s1_class_shift_db: dict[str, tuple[float, float]]  # class -> (VV, VH) dB

    @classmethod
    def draw(cls, seed: int) -> "DomainGap":
        rng = np.random.default_rng([seed, _STREAM_GAP])

        def signed(scale: float, n: int) -> np.ndarray:
            return rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n) * scale

        # Gains: a smooth tilt over log wavelength (illumination, sensor and atmosphere differ smoothly
        # across the spectrum) plus a small per-band part, so that ratios of neighbouring bands (B1/B2,
        # B8/B8A, B11/B12) stay realistic. Offsets: a path-radiance difference, falling with
        # wavelength as (490 nm / lambda) ** 2, of one random sign.
        x = np.log(_WAVELENGTH_NM / 1000.0)
        x = 2.0 * (x - x.min()) / (x.max() - x.min()) - 1.0
        level, tilt = signed(GAP_S2_GAIN_LEVEL, 1)[0], signed(GAP_S2_GAIN, 1)[0]
        gain = 1.0 + level + tilt * x + 0.25 * signed(GAP_S2_GAIN, len(S2_BANDS))
        offset = signed(GAP_S2_OFFSET, 1)[0] * (490.0 / _WAVELENGTH_NM) ** 2
        for i in _ATMOSPHERIC:  # B9 and the cirrus band B10 see the atmosphere, not the ground: no offset
            offset[i] = 0.0
        for i in _CIRRUS:  # nor a gain for B10
            gain[i] = 1.0
        shift = {}
        for c in CLASSES:  # log-factor per spectral region: seasonal change of this class
            log_factors = signed(GAP_S2_CLASS_SHIFT, len(S2_SPECTRAL_REGIONS))
            shift[c] = {r: float(np.exp(v)) for r, v in zip(S2_SPECTRAL_REGIONS, log_factors)}
        s1 = signed(GAP_S1_SHIFT_DB, len(S1_BANDS))
        s1_class = {c: tuple(map(float, signed(GAP_S1_CLASS_SHIFT_DB, len(S1_BANDS)))) for c in CLASSES}
        return cls(tuple(map(float, gain)), tuple(map(float, offset)), shift, tuple(map(float, s1)), s1_class)

    def s1_class_table(self) -> np.ndarray:
        """(2, classes) dB shift of the target SAR: per-domain offset plus class-conditional shift."""
        table = np.array([self.s1_class_shift_db[c] for c in CLASSES], dtype=np.float32).T
        return table + np.asarray(self.s1_shift_db, dtype=np.float32)[:, None]

    def class_factor_table(self) -> np.ndarray:
        """(13, classes) multiplicative factors of the class-conditional shift."""
        table = np.ones((len(S2_BANDS), _N_CLASSES), dtype=np.float32)
        for region, bands in S2_SPECTRAL_REGIONS.items():
            idx = band_indexes(S2_BANDS, bands)
            for c, name in enumerate(CLASSES):
                table[idx, c] = self.s2_class_shift[name][region]
        table[_B["B1"]] = table[_B["B2"]] ** np.float32(S2_B1_SURFACE_SHARE)
        return table

    def to_json(self) -> dict:
        return {
            "applies_to": "target; the source domain uses the reference spectra and backscatter",
            "s2_formula": "refl * class_shift[class][region(band)] * gain[band] + offset[band] "
                          "(B1: class_shift[visible] ** %s)" % S2_B1_SURFACE_SHARE,
            "s2_gain": dict(zip(S2_BANDS, self.s2_gain)),
            "s2_offset": dict(zip(S2_BANDS, self.s2_offset)),
            "s2_spectral_regions": {r: list(b) for r, b in S2_SPECTRAL_REGIONS.items()},
            "s2_class_shift": self.s2_class_shift,
            "s1_formula": "dB + shift_db[pol] + class_shift_db[class][pol]",
            "s1_shift_db": dict(zip(S1_BANDS, self.s1_shift_db)),
            "s1_class_shift_db": {c: dict(zip(S1_BANDS, v)) for c, v in self.s1_class_shift_db.items()},
            "magnitudes": {"s2_gain_tilt": GAP_S2_GAIN, "s2_gain_level": GAP_S2_GAIN_LEVEL, "s2_offset": GAP_S2_OFFSET,
                           "s2_class_shift_log": GAP_S2_CLASS_SHIFT, "s1_shift_db": GAP_S1_SHIFT_DB,
                           "s1_class_shift_db": GAP_S1_CLASS_SHIFT_DB},
        }



def _multiscale_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """Zero-mean, unit-std field (size, size) with structure at every scale: octaves of smooth noise
    with correlation lengths TEXTURE_OCTAVES_PX (weight (cell / 32) ** TEXTURE_SLOPE) and a
    full-resolution 3 x 3-smoothed white-noise component with the finest octave's weight."""
    fld = np.zeros((size, size), dtype=np.float32)
    weights = [(cell / TEXTURE_OCTAVES_PX[0]) ** TEXTURE_SLOPE for cell in TEXTURE_OCTAVES_PX]
    for cell, w in zip(TEXTURE_OCTAVES_PX, weights):
        fld += np.float32(w) * _smooth_field(rng, size, cell)
    fine = ndimage.uniform_filter(rng.standard_normal((size, size), dtype=np.float32), 3, mode="reflect")
    fld += np.float32(weights[-1]) * fine / (fine.std() + 1e-6)
    fld -= fld.mean()
    return fld / (fld.std() + 1e-6)


def _native_resolution(refl: np.ndarray) -> np.ndarray:
    """Box-filter each band over its native resolution (20 m: 2 px, 60 m: 6 px), in place."""
    for band, res in S2_NATIVE_RESOLUTION_M.items():
        k = res // 10
        if k > 1:
            refl[_B[band]] = ndimage.uniform_filter(refl[_B[band]], k, mode="reflect")
    return refl


def render_optical(rng: np.random.Generator, cmap: np.ndarray, gap: DomainGap | None) -> np.ndarray:
    """Cloud-free (13, H, W) float32 top-of-atmosphere reflectance in [0, 1] for a class map."""
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
    log_tex = np.zeros((len(S2_BANDS), size, size), dtype=np.float32)
    amp = _TEXTURE_AMP[cmap]  # (H, W, fields)
    for f in range(len(TEXTURE_FIELDS)):
        log_tex += _TEXTURE_LOADING[f][:, None, None] * (amp[..., f] * _multiscale_field(rng, size))[None]
    brightness = rng.normal(1.0, OPTICAL_TILE_BRIGHTNESS_STD)
    jitter = rng.normal(1.0, OPTICAL_TILE_BAND_JITTER_STD, len(S2_BANDS)).astype(np.float32)
    jitter[_B["B9"]] *= rng.uniform(*OPTICAL_WATER_VAPOUR)
    jitter[_CIRRUS] = rng.uniform(*OPTICAL_CIRRUS_FACTOR, len(_CIRRUS))
    refl *= np.exp(log_tex) * np.float32(brightness) * jitter[:, None, None]
    refl[_CIRRUS] /= np.float32(brightness)  # the cirrus band does not see the ground's illumination
    aerosol = rng.uniform(*OPTICAL_AEROSOL)
    for band, w in _AEROSOL_WEIGHT.items():
        refl[_B[band]] += np.float32(aerosol * w)
    if gap is not None:
        refl = refl * np.float32(gap.s2_gain)[:, None, None] + np.float32(gap.s2_offset)[:, None, None]
    refl = _native_resolution(refl)
    shared = rng.standard_normal((size, size), dtype=np.float32)
    refl *= 1.0 + OPTICAL_NOISE_SHARED * shared[None] + OPTICAL_NOISE_BAND * rng.standard_normal(
        refl.shape, dtype=np.float32)
    refl[[i for i in range(len(S2_BANDS)) if i not in _CIRRUS]] += OPTICAL_NOISE_ADD * rng.standard_normal(
        (len(S2_BANDS) - len(_CIRRUS), size, size), dtype=np.float32)
    return np.clip(refl, 0.0, 1.0)


def render_cloud_cover(rng: np.random.Generator, ground: np.ndarray, opacity: np.ndarray,
                       transmission: np.ndarray) -> np.ndarray:
    """Clouds over a cloud-free (13, H, W) reflectance tile: ``ground * transmission + cloud * opacity``.

    ``opacity`` and ``transmission`` (13, H, W) come from the cloud simulator
    (:func:`raypipe.synthetic.writer.simulator_opacity`); the cloud reflectance is
    :data:`CLOUD_SPECTRUM` times a per-tile brightness drawn in :data:`CLOUD_BRIGHTNESS`."""
    cloud = _CLOUD * np.float32(rng.uniform(*CLOUD_BRIGHTNESS))
    return np.clip(ground * transmission + cloud[:, None, None] * opacity, 0.0, 1.0)


def to_uint16(refl: np.ndarray) -> np.ndarray:
    """Reflectance -> SEN12MS storage (reflectance x 10000, uint16, clipped)."""
    return np.clip(np.rint(refl * S2_SCALE), 0, np.iinfo(np.uint16).max).astype(np.uint16)


