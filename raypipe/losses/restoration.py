"""Image-restoration losses and SPL's self-paced ordering.

* :func:`ssim`: the structural similarity of Wang et al. (2004) with an 11 x 11 Gaussian window
  (σ = 1.5), C1 = (0.01 L)², C2 = (0.03 L)², per image and band, then averaged (``L`` the data range:
  given, or per image the range of the reference).
* :func:`texture_complexity`: a tile's mean absolute finite-difference gradient over bands and pixels
  (flat ground 0, fine texture high), the "texture complexity" by which SPL orders samples easy → hard.
* :func:`self_paced_keep`: which samples of a batch an epoch learns from: the easiest fraction,
  growing from ``start`` in the first epoch to every sample from ``full_at`` of the epochs on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float | torch.Tensor | None = None,
         window: int = 11, sigma: float = 1.5, reduce: bool = True) -> torch.Tensor:
    """SSIM between images ``x`` and reference ``y`` (B, C, H, W): the batch mean, or per image with
    ``reduce=False``. The window shrinks to the tile (odd, ≤ min(H, W)) on small tiles; no padding
    (valid positions only)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    b, c, h, w = x.shape
    size = min(window, h, w)
    size -= (size + 1) % 2  # odd
    x, y = x.float(), y.float()
    if data_range is None:
        data_range = (y.flatten(1).amax(1) - y.flatten(1).amin(1)).clamp_min(1e-6)
    L = torch.as_tensor(data_range, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    k = _gaussian_window(size, sigma, x.dtype, x.device).expand(c, 1, size, size)
    filt = lambda t: F.conv2d(t, k, groups=c)  # noqa: E731
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x ** 2
    syy = filt(y * y) - mu_y ** 2
    sxy = filt(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    per_image = s.flatten(1).mean(1)
    return per_image.mean() if reduce else per_image


def texture_complexity(x: torch.Tensor) -> torch.Tensor:
    """Per image (B, C, H, W) → (B,): mean |x[..., i+1, :] − x[..., i, :]| + mean |x[..., j+1] − x[..., j]|."""
    x = x.float()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def pace_fraction(epoch: int, epochs: int, start: float, full_at: float) -> float:
    """The fraction of each batch (its easiest samples) that epoch ``epoch`` (0-based) of ``epochs``
    learns from: ``start`` at epoch 0, linearly up to 1 at epoch ``ceil(full_at · epochs) − 1`` and after."""
    last = max(1, math.ceil(full_at * epochs)) - 1
    if last <= 0 or epoch >= last:
        return 1.0
    return start + (1.0 - start) * epoch / last


def self_paced_keep(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """The boolean mask of the ``ceil(fraction · n)`` lowest-scored (easiest) samples, at least one;
    ties broken by position."""
    n = scores.numel()
    k = max(1, min(n, math.ceil(fraction * n - 1e-9)))
    order = torch.argsort(scores, stable=True)
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    keep[order[:k]] = True
    return keep
