"""``gdl``: the GDNet loss (shicaiwei123/TGRS-GDNet) on f_S's filtered pseudo labels.

Per modality m a Gaussian embedding z_m = mu_m + eps * sigma_m (mu_m at eval), the fused output from
both embeddings and each unimodal output from one of them (the other zeroed, through the same fused
head), and::

    L = CE(fused, y) + beta * sum_m [CE(uni_m, y) + MSE(uni_m, fused)] + kl_weight * sum_m KL(N(mu_m, sigma_m^2) || N(0, 1))

with the fused output not detached in the MSE, as in the public code. The target has no labels: y is
f_S's pseudo label with the MTTS stage-1 filter (``filter.*``); the CE terms count kept samples only,
MSE and KL every sample (they need no label). KL is the per-sample sum over dimensions, batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from raypipe.engine.config import StageConfig
from raypipe.engine.objective import forward, masked_ce
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.objectives.pseudo_label import FilterConfig, PseudoLabel


@dataclass
class GDLConfig(StageConfig):
    filter: FilterConfig = field(default_factory=FilterConfig)
    beta: float = 0.1  # the public code's per-dataset values: 0.2, 0.1, 0.05
    kl_weight: float = 1e-4

    def validate(self, path: str) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"{path}.beta", "must be >= 0")
        if not self.kl_weight >= 0:
            raise ConfigError(f"{path}.kl_weight", "must be >= 0")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over dimensions, mean over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def unimodal_outputs(model, out) -> dict[str, torch.Tensor]:
    """Each modality's prediction through the fused head with the other modality's embedding zeroed."""
    net = getattr(model, "module", model)  # under DDP
    zero_o, zero_s = torch.zeros_like(out.optical_features), torch.zeros_like(out.sar_features)
    return {"optical": net.fuse(out.optical_features, zero_s, out.optical, out.sar),
            "sar": net.fuse(zero_o, out.sar_features, out.optical, out.sar)}


@OBJECTIVES.register("gdl")
class GDL(PseudoLabel):
    Config = GDLConfig

    def check(self, path: str) -> None:
        super().check(path)
        model = self.config.model
        if model.get("kind") != "multimodal" or not model.get("variational") or model.get("fusion", "concat") != "concat":
            raise ConfigError(f"{path}.model", "GDL needs a multimodal model with variational: true and "
                                               "fusion: concat (Gaussian embeddings, one fused head)")

    def loss(self, model, teachers, batch):
        y, keep = self.pseudo_labels(teachers, batch)
        out = forward(model, batch, self.inputs)
        uni = unimodal_outputs(model, out)
        ce = masked_ce(out.fused, y, keep)
        uni_terms = sum(masked_ce(u, y, keep) + F.mse_loss(u, out.fused) for u in uni.values())
        kl = sum(gaussian_kl(out.mu[m], out.logvar[m]) for m in ("optical", "sar"))
        loss = ce + self.config.beta * uni_terms + self.config.kl_weight * kl
        return loss, {"ce": ce.detach(), "uni": uni_terms.detach(), "kl": kl.detach(), "kept": keep.float().mean()}
