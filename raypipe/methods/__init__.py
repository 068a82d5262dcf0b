"""Training methods plugged into the stage loops as losses and targets: KD, pseudo-label filtering, IRM."""

from raypipe.methods.filtering import FILTER_RULES, auroc, filter_pseudo_labels, filter_scores, filter_stats
from raypipe.methods.irm import (
    IRM_DEFAULTS,
    IRM_MODES,
    IRM_REFERENCES,
    SRC_WEIGHTINGS,
    irm_scores,
    irm_weights,
    target_distillation_loss,
)
from raypipe.methods.kd import kd_loss, kd_loss_from_probs, kd_per_sample, soft_targets

__all__ = [
    "soft_targets", "kd_loss", "kd_loss_from_probs", "kd_per_sample",
    "FILTER_RULES", "auroc", "filter_scores", "filter_pseudo_labels", "filter_stats",
    "IRM_MODES", "IRM_REFERENCES", "IRM_DEFAULTS", "SRC_WEIGHTINGS", "irm_scores", "irm_weights",
    "target_distillation_loss",
]
