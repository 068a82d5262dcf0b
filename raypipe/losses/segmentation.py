"""CloudSeg's student losses (DESIGN §6), on tensors, with the published constants as defaults.

* :func:`cloud_removal_loss`: a Charbonnier-type penalty on the restored optical image, weighted up
  under clouds: ``mean((1 + w·M) · ((ŷ − y)² + ε)^p)`` with ``w = 5``, ``ε = 1e-6``, ``p = 0.45``,
  ``M`` the cloud mask (1 = cloud) on the optical grid, broadcast over bands; the mean runs over every
  element (batch, bands, pixels).
* :func:`masked_hint_loss`: the feature hint from the teacher, on **cloud-free pixels only**:
  ``sum((f_s − f_t)² · (1 − M)) / D`` over batch, channels and pixels. ``normalise="all"`` (CloudSeg's
  ``mean(… · (1 − M))``) divides by every element, so that a cloudier batch weighs less;
  ``"clear"`` divides by the cloud-free elements only (the mean over the pixels it counts; 0 when
  a batch has none).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["cloud_removal_loss", "masked_hint_loss", "mask_like"]


def mask_like(mask: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A cloud mask (B, H, W) or (B, 1, H, W), 0/1, as float (B, 1, h, w) on ``ref``'s grid (nearest)."""
    m = mask.float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.shape[-2:] != ref.shape[-2:]:
        m = F.interpolate(m, size=ref.shape[-2:], mode="nearest")
    return m.to(ref.dtype)


def cloud_removal_loss(restored: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cloud_weight: float = 5.0,
                       eps: float = 1e-6, power: float = 0.45) -> torch.Tensor:
    """``mean((1 + cloud_weight · M) · ((restored − target)² + eps) ** power)``."""
    m = mask_like(mask, restored)
    return ((1.0 + cloud_weight * m) * ((restored - target) ** 2 + eps) ** power).mean()


def masked_hint_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                     normalise: Literal["all", "clear"] = "all") -> torch.Tensor:
    """Squared feature difference on cloud-free pixels (``M = 0``) only; see the module docstring."""
    keep = 1.0 - mask_like(mask, student)
    se = (student - teacher.detach()) ** 2 * keep
    if normalise == "all":
        return se.mean()
    if normalise == "clear":
        counted = keep.sum() * student.shape[1]
        return se.sum() / counted if counted > 0 else se.sum() * 0.0
    raise ValueError(f"normalise must be 'all' or 'clear', not {normalise!r}")
