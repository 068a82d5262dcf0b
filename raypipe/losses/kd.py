"""Soft-target knowledge distillation (Hinton et al. 2015).

Per sample i, with temperature T, teacher distribution ``p_i = softmax(t_i / T)`` and student
log-distribution ``log q_i = log_softmax(s_i / T)``::

    l_i = T^2 * KL(p_i || q_i) = T^2 * sum_c p_ic (log p_ic - log q_ic)

The T^2 factor keeps the gradient scale comparable across temperatures. Reduction:

* no weights: ``mean_i l_i`` (batch mean).
* weights ``w_i >= 0`` and ``normalize="weights"`` (default): ``sum_i w_i l_i / sum_i w_i``
  (a weighted mean: the loss scale does not depend on the weights' scale; all-zero weights
  give 0).
* ``normalize="batch"``: ``sum_i w_i l_i / B`` (the weights' scale matters; used by IRM, whose
  per-sample weights of the two teachers sum to 1, so the two terms add up to one batch mean).

The teacher is always detached: gradients reach the student only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_targets", "kd_loss", "kd_loss_from_probs", "kd_per_sample"]

_NORMALIZE = ("weights", "batch")


def soft_targets(logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension (detached)."""
    if T <= 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    return F.softmax(logits.detach().float() / T, dim=-1)


def kd_per_sample(student_logits: torch.Tensor, teacher_probs: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(teacher_probs || softmax(student / T))`` per sample, shape ``(B,)``.

    ``teacher_probs`` are probabilities (e.g. ``soft_targets(t, T)`` or a mixture of them).
    """
    if T <= 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probs.shape)} differ")
    p = teacher_probs.detach().float()
    log_q = F.log_softmax(student_logits.float() / T, dim=-1)
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=-1)
    return kl * (T * T)


def _reduce(per_sample: torch.Tensor, weights: torch.Tensor | None, normalize: str) -> torch.Tensor:
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    if weights is None:
        return per_sample.mean()
    w = weights.detach().to(per_sample.dtype).reshape(-1)
    if w.shape != per_sample.shape:
        raise ValueError(f"{w.numel()} weights for {per_sample.numel()} samples")
    if bool((w < 0).any()):
        raise ValueError("weights must be >= 0")
    total = (w * per_sample).sum()
    if normalize == "batch":
        return total / per_sample.numel()
    return total / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def kd_loss_from_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, T: float = 4.0,
                       weights: torch.Tensor | None = None, normalize: str = "weights") -> torch.Tensor:
    """KD loss against given teacher probabilities (see the module docstring for the reduction)."""
    return _reduce(kd_per_sample(student_logits, teacher_probs, T), weights, normalize)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0,
            weights: torch.Tensor | None = None, normalize: str = "weights") -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean or weighted mean (module docstring)."""
    return kd_loss_from_probs(student_logits, soft_targets(teacher_logits, T), T, weights, normalize)
