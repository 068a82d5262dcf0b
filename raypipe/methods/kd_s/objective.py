"""``soft_kd``: soft-target knowledge distillation from one frozen teacher (KD-S, Hinton et al. 2015,
as in Knowledge-Distillation-Zoo ``kd_losses/st.py``)::

    L = T² · KL(softmax(t/T) ‖ softmax(s/T)),   batch mean, teacher detached

The target domain has no labels, so KD-S here has no cross-entropy term. A multi-modal student
learns on its fused head (and, with ``lambda_uni`` > 0, also on each unimodal head) from the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raypipe.engine.config import StageConfig
from raypipe.engine.objective import Objective, forward, main_logits
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.losses import kd_loss


@dataclass
class SoftKDConfig(StageConfig):
    temperature: float = 4.0  # KD temperature T
    lambda_uni: float = 0.0  # weight of KD into each unimodal head of a multi-modal student (0 = fused only)

    def validate(self, path: str) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"{path}.temperature", "must be > 0")
        if not self.lambda_uni >= 0:
            raise ConfigError(f"{path}.lambda_uni", "must be >= 0")


@OBJECTIVES.register("soft_kd")
class SoftKD(Objective):
    Config = SoftKDConfig

    def check(self, path: str) -> None:
        if len(self.teacher_inputs) != 1:
            raise ConfigError(path, f"soft_kd learns from exactly one teacher, has {list(self.teacher_inputs)}")

    def loss(self, model, teachers, batch):
        T = self.config.temperature
        with torch.no_grad():
            t = self.teacher_logits(teachers, next(iter(self.teacher_inputs)), batch)
        out = forward(model, batch, self.inputs)
        loss = kd_loss(main_logits(out), t, T=T)
        parts = {"kd": loss.detach()}
        if hasattr(out, "optical"):
            if self.config.lambda_uni > 0:
                uni = kd_loss(out.optical, t, T=T) + kd_loss(out.sar, t, T=T)
                loss = loss + self.config.lambda_uni * uni
                parts["kd_uni"] = uni.detach()
            else:  # the unimodal heads take no part, but DDP must see every parameter used
                loss = loss + 0.0 * (out.optical.sum() + out.sar.sum())
        return loss, parts
