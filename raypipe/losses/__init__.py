"""Losses the objectives are built from: soft-target KD, pseudo-label filtering by logits, IRM."""

from raypipe.losses.filtering import FILTER_RULES, auroc, filter_pseudo_labels, filter_scores, filter_stats
from raypipe.losses.irm import (
    IRM_DEFAULTS,
    IRM_MODES,
    IRM_REFERENCES,
    SRC_WEIGHTINGS,
    irm_scores,
    irm_weights,
    target_distillation_loss,
)
from raypipe.losses.kd import kd_loss, kd_loss_from_probs, kd_per_sample, soft_targets

__all__ = [
    "soft_targets", "kd_loss", "kd_loss_from_probs", "kd_per_sample",
    "FILTER_RULES", "auroc", "filter_scores", "filter_pseudo_labels", "filter_stats",
    "IRM_MODES", "IRM_REFERENCES", "IRM_DEFAULTS", "SRC_WEIGHTINGS", "irm_scores", "irm_weights",
    "target_distillation_loss",
]
