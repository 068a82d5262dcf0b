"""``irm_distill``: MTTS stage 2, KD from f_S and the two auxiliary models into the multi-modal
target model, weighted per sample by IRM (``raypipe.losses.target_distillation_loss``)."""

from __future__ import annotations

import torch

from raypipe.engine.objective import Objective, forward
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.losses import target_distillation_loss
from raypipe.methods.mtts.config import DistillConfig
from raypipe.objectives import apply_filter

ROLES = ("source", "aux_optical", "aux_sar")  # the teachers, in the order the loss takes them


@OBJECTIVES.register("irm_distill")
class IRMDistill(Objective):
    Config = DistillConfig

    def check(self, path: str) -> None:
        if tuple(self.teacher_inputs) != ROLES:
            raise ConfigError(path, f"irm_distill needs teachers {list(ROLES)}, has {list(self.teacher_inputs)}")
        if self.inputs != "both":
            raise ConfigError(path, "irm_distill trains a multi-modal (optical + SAR) student")

    def loss(self, model, teachers, batch):
        c = self.config
        with torch.no_grad():
            src, opt, sar = (self.teacher_logits(teachers, name, batch) for name in ROLES)
            mask = None
            if c.filter.enabled:  # ablation: filtering in stage 2
                _, mask = apply_filter(c.filter, src, batch.get("cloud_fraction"))
        out = forward(model, batch, self.inputs)
        loss, parts = target_distillation_loss(
            out, src, opt, sar, irm=c.irm, temperature=c.temperature, lambda_src=c.lambda_src,
            lambda_aux=c.lambda_aux, lambda_uni=c.lambda_uni, src_weighting=c.src_weighting,
            sample_mask=mask, cloud_fraction=batch.get("cloud_fraction"))
        return loss, {k: v.detach().float().mean() for k, v in parts.items() if torch.is_tensor(v)}
