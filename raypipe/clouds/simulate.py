"""Simulated clouds (and their shadows) on cloud-free optical tiles, seeded from the sample id (DESIGN §3).

A cloud *field* is multi-octave gradient (Perlin) noise: octave ``k`` has lattice cells
``2**k`` times smaller than the coarsest one and weight ``(2**-k) ** decay`` (the cell size
relative to the coarsest, raised to ``decay``). The sum is normalised to unit standard deviation,
squashed by ``tanh(contrast * z)`` and rescaled to [0, 1]. A clear-sky level ``l`` turns it into
a cloud level ``u = clip((q - l) / (1 - l), 0, 1)`` and an opacity
``c = (min + (max - min) * u) * min(1, u / edge)``: ``min`` at the cloud's inner edge, ``max`` at
the field's peak, faded in from 0 over a cloud-level width ``edge`` so that cloud borders are
soft. Each band b gets ``c_b = min(c * k_b, 1)`` with a per-sample, per-band factor ``k_b`` in
``1 ± band_offset``, and the tile is blended as

    out = in * (1 - c_b) + base * c_b,   base = c_b + colour * (1 - c_b)

(thin cloud tints towards ``colour``, opaque cloud is white). Shadows, when the preset has them,
darken the ground first, ``out = in * (1 - s)``, with ``s`` the cloud level of a second window of
the same noise canvas displaced by ``shadow_shift`` of the tile size: the shadow is a shifted
copy of its cloud, as from an oblique sun.

The cloud mask is ``c > MASK_OPACITY`` (band-mean opacity, before the per-band factors) and the
cloud fraction is the mask's mean. A target ``coverage`` replaces the clear-sky level: the field
is cut at the rank that puts ``round(coverage * H * W)`` pixels in the mask.

Determinism: everything is drawn from one ``numpy.random.Generator`` seeded by
:func:`seed_from_id` (blake2b of sample id and salt), and the noise is built from element-wise
array operations and one matrix product, so a given (sample id, salt, preset, coverage, shape) gives bit-identical
output in every process and on every worker of one software stack (numpy/BLAS build and CPU
type); across different CPU types, BLAS kernels and vectorised ``tanh`` may differ in the last
bit of float32.

Cost: 2-4 ms for a 13 x 256 x 256 tile on one core, by preset (``benchmarks/cloud_detection.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from raypipe.clouds.buckets import CLEAR_MAX, CLOUDY_MIN
from raypipe.errors import ConfigError

# A pixel is "cloud" when its band-mean opacity exceeds this (5 %: below, a haze hardly visible).
MASK_OPACITY = 0.05
# Finest octave: lattice cells of at least this many pixels (finer is aliased, and costs for nothing).
MIN_CELL_PX = 2.0
# Cloud-fraction buckets of the evaluation (raypipe.clouds.buckets): clear < 0.1 <= partly <= 0.9 < full.
FULL_MIN = CLOUDY_MIN  # the "cloudy" bucket's bound, under the simulator's name for it


def seed_from_id(sample_id: str, salt: str = "") -> int:
    """A 64-bit seed from a sample id and a salt, identical in every process and on every machine.

    blake2b of the UTF-8 text (Python's ``hash()`` is randomised per process). The salt and the id
    are separated by a NUL so that ("ab", "c") and ("a", "bc") differ.
    """
    digest = hashlib.blake2b(f"{salt}\0{sample_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class CloudPreset:
    """Knobs of the cloud simulator. Sizes are relative to the tile's longer side (resolution-free).

    octaves          number of noise octaves (capped so cells stay >= 2 px)
    decay            octave k weight = (2**-k) ** decay; larger = smoother, blobbier clouds
    base_cells       lattice cells of the coarsest octave across the tile's longer side
    contrast         tanh gain on the unit-variance noise; larger = flat opaque cores, sharper edges
    clear_level      field level in [0, 1) under which the sky is clear (when no coverage is asked)
    min_opacity      opacity where the cloud level starts (cloud edge), before the fade-in
    max_opacity      opacity at the field's maximum
    edge             cloud-level width (0-1] over which opacity fades in from 0 (soft borders)
    band_offset      per-band opacity factors drawn in 1 ± band_offset (clouds are not perfectly grey)
    colour           reflectance that thin cloud tints towards (base = c + colour * (1 - c))
    local_fields     number of low-frequency fields multiplied in, to gather clouds into patches
    local_cells      lattice cells of those local fields
    shadow           cast shadows
    shadow_strength  maximum shadow darkening s (out = in * (1 - s))
    shadow_shift     cloud-to-shadow displacement, fraction of the tile's longer side
    """

    octaves: int = 6
    decay: float = 1.0
    base_cells: float = 2.0
    contrast: float = 1.0
    clear_level: float = 0.5
    min_opacity: float = 0.0
    max_opacity: float = 1.0
    edge: float = 0.3
    band_offset: float = 0.03
    colour: float = 0.9
    local_fields: int = 0
    local_cells: float = 1.5
    shadow: bool = False
    shadow_strength: float = 0.6
    shadow_shift: float = 0.06

    def __post_init__(self):
        if self.octaves < 1 or self.base_cells <= 0 or self.local_cells <= 0 or not 0 < self.edge <= 1:
            raise ConfigError("clouds.preset", "octaves >= 1, base_cells > 0, local_cells > 0 and 0 < edge <= 1 "
                                               "are required")
        if not 0.0 <= self.clear_level < 1.0:
            raise ConfigError("clouds.preset.clear_level", f"must be in [0, 1), got {self.clear_level}")
        if not (0.0 <= self.min_opacity <= self.max_opacity <= 1.0 and self.max_opacity > MASK_OPACITY):
            raise ConfigError("clouds.preset", f"need 0 <= min_opacity <= max_opacity <= 1 and max_opacity > "
                                               f"{MASK_OPACITY}, got {self.min_opacity}, {self.max_opacity}")

    def opacity(self, level: np.ndarray) -> np.ndarray:
        """Opacity of cloud level ``u`` in [0, 1]: ``(min + (max - min) u) * min(1, u / edge)``."""
        ramp = np.float32(self.min_opacity) + np.float32(self.max_opacity - self.min_opacity) * level
        return ramp * np.minimum(level / np.float32(self.edge), np.float32(1.0))

    def mask_level(self) -> float:
        """The cloud level u at which the opacity reaches :data:`MASK_OPACITY` (opacity is increasing in u)."""
        span, low, edge = self.max_opacity - self.min_opacity, self.min_opacity, self.edge
        if low + span * edge <= MASK_OPACITY:  # reached past the fade-in, on the linear part
            return (MASK_OPACITY - low) / span
        if span == 0.0:  # flat opacity: the fade-in alone, low * u / edge
            return MASK_OPACITY * edge / low
        # inside the fade-in: span/edge u^2 + low/edge u - level = 0
        return (-low + float(np.sqrt(low * low + 4.0 * span * MASK_OPACITY * edge))) / (2.0 * span)


PRESETS: dict[str, CloudPreset] = {
    # Large opaque clouds with soft edges.
    "thick": CloudPreset(),
    # Semi-transparent veils gathered into a few patches; the ground stays visible.
    "thin": CloudPreset(decay=0.8, clear_level=0.35, min_opacity=0.05, max_opacity=0.6, band_offset=0.1,
                        colour=0.8, local_fields=3),
    # A low, nearly uniform haze over the whole tile.
    "fog": CloudPreset(octaves=3, decay=1.5, base_cells=1.0, contrast=0.5, clear_level=0.0,
                       min_opacity=0.15, max_opacity=0.35, edge=0.1, band_offset=0.05, colour=0.9),
    # Thick clouds that cast shadows.
    "shadow": CloudPreset(shadow=True),
}


@dataclass
class SimulatedClouds:
    """A simulated cloudy tile: ``image`` (C, H, W) float32 reflectance, ``mask`` (H, W) bool
    (True = cloud), ``fraction`` = mask mean, ``shadow_mask`` (H, W) bool of visible shadow
    (shadowed and not under cloud) or ``None`` when the preset casts no shadows."""

    image: np.ndarray
    mask: np.ndarray
    fraction: float
    shadow_mask: np.ndarray | None


def _axis_weights(n: int, cell_px: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation matrices of one axis for gradient noise, each (n, lattice points).

    ``value[p, i]`` is the quintic fade weight of lattice point i for pixel p (non-zero for the
    two points around it); ``offset[p, i] = value[p, i] * (t_p - i)`` carries the pixel's distance
    to that point, which the gradient multiplies. ``phase`` shifts the lattice (in cells) so that
    octaves do not share zero crossings.
    """
    t = (np.arange(n, dtype=np.float32) + np.float32(0.5)) / np.float32(cell_px) + np.float32(phase)
    cell = np.floor(t).astype(np.intp)
    frac = t - cell
    fade = frac * frac * frac * (frac * (frac * 6 - 15) + 10)
    rows = np.arange(n)
    value = np.zeros((n, cell[-1] + 2), dtype=np.float32)
    offset = np.zeros_like(value)
    value[rows, cell] = 1 - fade
    value[rows, cell + 1] = fade
    offset[rows, cell] = (1 - fade) * frac
    offset[rows, cell + 1] = fade * (frac - 1)
    return value, offset


def _fractal_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float, octaves: int,
                   decay: float) -> np.ndarray:
    """Multi-octave Perlin noise (H, W) float32, unnormalised.

    Perlin noise is separable given its gradients: with per-axis matrices V (fade weights) and
    O (weights x offsets), one octave is ``Vy @ Gx @ Ox.T + Oy @ Gy @ Vx.T`` for lattice gradients
    (Gy, Gx). All octaves are stacked into a single matrix product (H, M) @ (M, W).
    """
    left, right = [], []
    for k in range(octaves):
        size = cell_px / 2 ** k
        if size < MIN_CELL_PX and k > 0:
            break
        vy, oy = _axis_weights(shape[0], size, rng.random())
        vx, ox = _axis_weights(shape[1], size, rng.random())
        grad = rng.standard_normal((2, vy.shape[1], vx.shape[1])).astype(np.float32)
        grad /= np.sqrt(grad[0] ** 2 + grad[1] ** 2) + np.float32(1e-12)
        weight = np.float32((2.0 ** -k) ** decay)
        left += [vy @ (grad[1] * weight), oy @ (grad[0] * weight)]
        right += [ox, vx]
    return np.hstack(left) @ np.hstack(right).T


def _unit(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (min-max over the array)."""
    low, high = x.min(), x.max()
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


def _cloud_field(rng: np.random.Generator, shape: tuple[int, int], long_side: int, preset: CloudPreset) -> np.ndarray:
    """The squashed cloud field q in [0, 1], (H, W) float32, with the preset's local fields multiplied in."""
    noise = _fractal_noise(rng, shape, long_side / preset.base_cells, preset.octaves, preset.decay)
    field = _unit(np.tanh(np.float32(preset.contrast) * noise / (noise.std() + np.float32(1e-12))))
    for _ in range(preset.local_fields):
        field *= _unit(_fractal_noise(rng, shape, long_side / preset.local_cells, 2, 1.0))
    return _unit(field) if preset.local_fields else field


def _clear_level_for(field: np.ndarray, coverage: float, mask_level: float) -> float:
    """Clear-sky level that puts ``round(coverage * N)`` (>= 1) pixels of ``field`` above the mask level.

    The mask is ``u > a`` with ``u = (q - l) / (1 - l)``, i.e. ``q > l + a (1 - l)``: the cut
    ``t`` is set midway between the two field values around the wanted rank (just below the
    minimum for full coverage), and ``l`` solved from it.
    """
    values = field.ravel()
    n = values.size
    keep = int(round(coverage * n))
    if keep >= n:
        cut = float(values.min()) - 1e-3
    else:
        ranks = [n - keep - 1, n - keep]
        cut = float(np.partition(values, ranks)[ranks].mean(dtype=np.float64))
    return (cut - mask_level) / (1.0 - mask_level)


def _cloud_level(field: np.ndarray, clear_level: float) -> np.ndarray:
    """Cloud level u = clip((q - l) / (1 - l), 0, 1), float32: 0 where the field is under the clear level."""
    return np.clip((field - np.float32(clear_level)) / np.float32(1.0 - clear_level), 0.0, 1.0)


def _shadow_shift(rng: np.random.Generator, long_side: int, preset: CloudPreset) -> tuple[int, int]:
    """Integer (dy, dx) displacement of shadows from clouds, in a seeded direction."""
    direction = rng.standard_normal(2)
    direction /= np.sqrt(direction @ direction) + 1e-12
    dy, dx = np.rint(direction * preset.shadow_shift * long_side).astype(int)
    return int(dy), int(dx)


def _blend(image: np.ndarray, opacity: np.ndarray, factors: np.ndarray, colour: float,
           shade: np.ndarray | None = None) -> np.ndarray:
    """Shadows then clouds, band by band: ``g = in (1 - s)``, ``out = g (1 - c_b) + base c_b``.

    ``base = c_b + colour (1 - c_b)`` and ``c_b = min(c k_b, 1)``; ``shade`` is ``1 - s`` (or
    ``None``: no shadow). The blend is computed as ``g + c_b (colour - g + c_b (1 - colour))``
    in place, with (H, W) scratch buffers that stay in cache: the only large allocation is the
    output.
    """
    out = np.empty_like(image)
    cb = np.empty_like(opacity)
    ground = np.empty_like(opacity)
    for band, factor in enumerate(factors):
        if shade is None:
            ground[...] = image[band]
        else:
            np.multiply(image[band], shade, out=ground)
        np.multiply(opacity, factor, out=cb)
        np.minimum(cb, np.float32(1.0), out=cb)
        layer = out[band]
        np.multiply(cb, np.float32(1.0 - colour), out=layer)
        layer += np.float32(colour)
        layer -= ground
        layer *= cb
        layer += ground
    return out


def resolve_preset(preset: str | CloudPreset) -> CloudPreset:
    """A preset by name (``PRESETS``) or as given; unknown names raise ConfigError('clouds.preset')."""
    if isinstance(preset, CloudPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError("clouds.preset", f"unknown preset '{preset}' (known: {sorted(PRESETS)})")
    return PRESETS[preset]


def simulate_clouds(image: np.ndarray, sample_id: str, preset: str | CloudPreset = "thick", salt: str = "",
                    coverage: float | None = None) -> SimulatedClouds:
    """Put seeded clouds (and shadows) on ``image`` (C, H, W), float reflectance in [0, 1].

    ``coverage`` in [0, 1] sets the cloud fraction (``round(coverage * H * W)`` mask pixels;
    0 returns the image unchanged, 1 a fully covered mask); ``None`` keeps the preset's
    clear-sky level, so the fraction varies with the noise. Deterministic in (sample_id, salt,
    preset, coverage, shape); see the module docstring.
    """
    cfg = resolve_preset(preset)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    if coverage is not None and not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be in [0, 1], got {coverage}")
    h, w = image.shape[1:]
    if coverage is not None and round(coverage * h * w) == 0:
        return SimulatedClouds(image.copy(), np.zeros((h, w), bool), 0.0,
                               np.zeros((h, w), bool) if cfg.shadow else None)

    rng = np.random.default_rng(seed_from_id(sample_id, salt))
    long_side = max(h, w)
    dy, dx = _shadow_shift(rng, long_side, cfg) if cfg.shadow else (0, 0)
    oy, ox = max(dy, 0), max(dx, 0)  # cloud window in the canvas; the shadow window is at (oy-dy, ox-dx)
    canvas = _cloud_field(rng, (h + abs(dy), w + abs(dx)), long_side, cfg)
    field = canvas[oy:oy + h, ox:ox + w]
    clear = cfg.clear_level if coverage is None else _clear_level_for(field, coverage, cfg.mask_level())
    opacity = cfg.opacity(_cloud_level(field, clear))
    factors = (1.0 + cfg.band_offset * rng.uniform(-1.0, 1.0, image.shape[0])).astype(np.float32)
    mask = opacity > np.float32(MASK_OPACITY)

    shade, shadow = None, None
    if cfg.shadow:
        window = canvas[oy - dy:oy - dy + h, ox - dx:ox - dx + w]
        darkening = np.float32(cfg.shadow_strength) * _cloud_level(window, clear)
        shade = np.float32(1.0) - darkening
        shadow = (darkening > np.float32(MASK_OPACITY)) & ~mask
    return SimulatedClouds(_blend(image, opacity, factors, cfg.colour, shade), mask, float(mask.mean()), shadow)


@dataclass(frozen=True)
class CoverageDistribution:
    """How a sample's target cloud coverage is drawn: a bucket by weight, then uniform inside it.

    Buckets follow the evaluation's (DESIGN §3): ``clear`` in [0, 0.1), ``partly`` in [0.1, 0.9),
    ``full`` in (0.9, 1]. Weights are relative (normalised here); the default is a third each.
    The draw is seeded from the sample id and salt, on a stream separate from the cloud noise.
    """

    clear: float = 1 / 3
    partly: float = 1 / 3
    full: float = 1 / 3

    def __post_init__(self):
        weights = (self.clear, self.partly, self.full)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError("clouds.coverage", f"bucket weights must be >= 0 with a positive sum, got {weights}")

    def draw(self, sample_id: str, salt: str = "") -> float:
        """Target coverage in [0, 1] for ``sample_id``; the same in every process."""
        rng = np.random.default_rng(seed_from_id(sample_id, f"coverage|{salt}"))
        pick, within = rng.random(2)
        weights = np.array([self.clear, self.partly, self.full], dtype=np.float64)
        bucket = int(np.searchsorted(np.cumsum(weights / weights.sum()), pick, side="right"))
        if bucket == 0:
            return CLEAR_MAX * within
        if bucket == 1:
            return CLEAR_MAX + (FULL_MIN - CLEAR_MAX) * within
        return 1.0 - (1.0 - FULL_MIN) * within
