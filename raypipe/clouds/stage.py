"""The cloud stage of the data pipeline: every sample leaves it with a cloud mask and a cloud fraction.

Modes (``clouds.mode``):

* ``given``    — the dataset ships masks (M3M-CR ``.npy``, the generated benchmark's mask tiles). On a
  dataset whose masks are the simulator's truth (the generated benchmark), that is an **oracle**: a
  real user has no true mask, so such runs are labelled oracle.
* ``detect``   — real cloudy Sentinel-2 L1C: s2cloudless at reduced resolution (default) or the
  model-free DSen2-CR rule (``detector: rule``).
* ``simulate`` — cloud-free optical turned into a cloudy target domain, seeded from the sample id
  (identical in every epoch and on every worker).
* ``none``     — no clouds: an all-clear mask.
* ``auto``     — what a user has: ``given`` when the sample has a mask file the dataset ships as a
  product (M3M-CR), else ``detect`` when the optical input is the cloudy Sentinel-2 acquisition (also
  on the generated benchmark, whose masks are truth), else ``given`` for truth masks on non-S2 data,
  else ``none``.

Whatever feeds training, evaluation buckets use the best mask there is (:meth:`CloudStage.bucket_mask`):
the dataset's mask file when the sample has one (simulator truth, M3M-CR's masks), else the training
mask.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from raypipe import storage
from raypipe.errors import BadTileError, ConfigError

MODES = ("auto", "detect", "simulate", "given", "none")


@dataclass
class CloudConfig:
    mode: Literal["auto", "detect", "simulate", "given", "none"] = "auto"
    detector: Literal["s2cloudless", "rule"] = "s2cloudless"
    factor: int = 0  # s2cloudless down-sampling factor; 0 = the detector's default
    threshold: float = -1.0  # detector threshold; < 0 = the detector's default
    preset: str = "thick"  # simulation preset
    coverage: dict[str, float] = field(default_factory=dict)  # CoverageDistribution fields; {} = default
    salt: str = ""  # changes the simulated clouds without changing sample ids

    def validate(self, path: str = "clouds") -> None:
        from raypipe.clouds.simulate import PRESETS

        if self.preset not in PRESETS:
            raise ConfigError(f"{path}.preset", f"unknown preset '{self.preset}' (known: {sorted(PRESETS)})")
        if self.factor < 0:
            raise ConfigError(f"{path}.factor", "must be >= 1 (or 0 for the default)")


def _detector(cfg: CloudConfig):
    from raypipe.clouds.detect import make_detector

    params = {}
    if cfg.detector == "s2cloudless" and cfg.factor:
        params["factor"] = cfg.factor
    if cfg.threshold >= 0:
        params["threshold"] = cfg.threshold
    return make_detector(cfg.detector, **params)


def read_mask(uri: str, shape: tuple[int, int]) -> np.ndarray:
    """A dataset mask (``.npy`` bool or single-band GeoTIFF) as bool (H, W), resized to ``shape``."""
    from raypipe import raster

    try:
        if uri.lower().endswith(".npy"):
            try:
                mask = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
            except FileNotFoundError as exc:
                raise BadTileError(uri, "missing", "cloud mask file does not exist") from exc
            except ValueError as exc:
                raise BadTileError(uri, "corrupt", f"not a readable .npy mask ({exc})") from exc
        else:
            mask = raster.read(uri, raster.Expect(bands=1))[0]
    except BadTileError:
        raise
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise BadTileError(uri, "size", f"cloud mask has shape {mask.shape}, expected 2-D")
    if mask.shape != tuple(shape):
        rows = (np.arange(shape[0]) * mask.shape[0] // shape[0])
        cols = (np.arange(shape[1]) * mask.shape[1] // shape[1])
        mask = mask[rows][:, cols]
    return mask


class CloudStage:
    """Apply the configured cloud handling to one sample's raw optical tile."""

    def __init__(self, cfg: CloudConfig, optical_scale: float, is_sentinel2: bool, optical_is_cloudy: bool,
                 masks_are_truth: bool = False):
        self.cfg = cfg
        self.scale = optical_scale
        self.is_s2 = is_sentinel2
        self.optical_is_cloudy = optical_is_cloudy
        self.masks_are_truth = masks_are_truth
        if cfg.mode == "detect" and not is_sentinel2:
            raise ConfigError("data.clouds.mode", "'detect' needs Sentinel-2 L1C (13 bands); this dataset is not")
        self._detect = None
        self._coverage = None

    def mode_for(self, mask_uri: str) -> str:
        if self.cfg.mode != "auto":
            return self.cfg.mode
        if mask_uri and not self.masks_are_truth:
            return "given"
        if self.optical_is_cloudy and self.is_s2:
            return "detect"
        return "given" if mask_uri else "none"

    def source(self, mask_uri: str) -> str:
        """Where a sample's training-time cloud mask comes from, in words; ``[oracle]`` marks truth."""
        mode = self.mode_for(mask_uri)
        if mode == "detect":
            return f"detector:{self.cfg.detector}"
        if mode == "given":
            return "simulator truth [oracle]" if self.masks_are_truth else "dataset masks"
        return {"simulate": "simulated", "none": "none (clear)"}[mode]

    def bucket_mask(self, mask: np.ndarray, mask_uri: str) -> np.ndarray:
        """The mask evaluation buckets use: the dataset's own file when there is one and training did
        not already read it, else the training mask."""
        if mask_uri and self.mode_for(mask_uri) not in ("given", "simulate", "none"):
            return read_mask(mask_uri, mask.shape)
        return mask

    def __call__(self, sample_id: str, optical: np.ndarray, mask_uri: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(optical raw array, possibly with simulated clouds, in its own dtype; mask bool (H, W))."""
        mode = self.mode_for(mask_uri)
        shape = optical.shape[-2:]
        if mode == "none":
            return optical, np.zeros(shape, dtype=bool)
        if mode == "given":
            if not mask_uri:
                raise BadTileError(f"<{sample_id}>", "missing", "clouds.mode is 'given' but the sample has no cloud mask")
            return optical, read_mask(mask_uri, shape)
        if mode == "detect":
            if self._detect is None:
                self._detect = _detector(self.cfg)
            _, mask = self._detect(optical)
            return optical, np.asarray(mask, dtype=bool)
        # simulate
        from raypipe.clouds.simulate import CoverageDistribution, simulate_clouds

        if self._coverage is None:
            self._coverage = CoverageDistribution(**self.cfg.coverage)
        coverage = self._coverage.draw(sample_id, self.cfg.salt)
        # Same arithmetic as ``optical.astype(float32) / scale`` and ``clip(image * scale)`` (bit for
        # bit), in one pass each and without temporaries: the cast happens inside the ufunc, and the
        # simulated image, which this stage owns, is scaled and clipped in place.
        scale = np.float32(self.scale)
        sim = simulate_clouds(np.divide(optical, scale, dtype=np.float32), sample_id, self.cfg.preset,
                              self.cfg.salt, coverage)
        out = np.multiply(sim.image, scale, out=sim.image)
        np.clip(out, 0, np.iinfo(optical.dtype).max if optical.dtype.kind == "u" else None, out=out)
        return out.astype(optical.dtype, copy=False), np.asarray(sim.mask, dtype=bool)
