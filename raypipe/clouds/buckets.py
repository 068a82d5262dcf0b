"""Cloud-cover buckets: the one definition every part of raypipe uses (DESIGN §3).

A sample with cloud fraction f is **clear** when f < ``CLEAR_MAX`` (0.1), **cloudy** (fully
contaminated) when f > ``CLOUDY_MIN`` (0.9), and **partly** cloudy otherwise (both bounds inclusive).
The evaluation buckets, the simulator's coverage draws, the generated benchmark's counts and the
stage-1 cloud gate (``filter.max_cloud_fraction``: kept when f < the bound, the same strict inequality
as the clear bucket) all use these names and inequalities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLEAR_MAX = 0.1    # cloud fraction strictly below this: "clear"
CLOUDY_MIN = 0.9   # cloud fraction strictly above this: "cloudy"
CLOUD_BUCKETS: tuple[str, ...] = ("clear", "partly", "cloudy")


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def cloud_bucket(fraction: float) -> str:
    """``"clear"`` if fraction < CLEAR_MAX, ``"cloudy"`` if > CLOUDY_MIN, else ``"partly"``."""
    f = float(fraction)
    if not 0.0 <= f <= 1.0:  # also rejects NaN
        raise ValueError(f"cloud fraction must be in [0, 1], got {fraction!r}")
    if f < CLEAR_MAX:
        return "clear"
    if f > CLOUDY_MIN:
        return "cloudy"
    return "partly"


def cloud_buckets(fractions: Any) -> np.ndarray:
    """Vectorised ``cloud_bucket``: array of bucket names."""
    f = _np(fractions).astype(np.float64).ravel()
    if f.size and not (np.all(f >= 0.0) and np.all(f <= 1.0)):
        raise ValueError("cloud fractions must be in [0, 1] (no NaN)")
    out = np.full(f.shape, "partly", dtype=object)
    out[f < CLEAR_MAX] = "clear"
    out[f > CLOUDY_MIN] = "cloudy"
    return out
