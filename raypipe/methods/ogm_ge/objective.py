"""``ogm_ge``: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng et al., CVPR 2022;
GeWu-Lab/OGM-GE_CVPR2022) on f_S's filtered pseudo labels.

Per batch, with each modality's share of the fused logits (``fused_contributions``: the split concat
head, ``out_u = u·W_uᵀ + b/2``) and labels y over the kept samples::

    s_u = Σ_i softmax(out_u)_i[y_i]          ρ = s_opt / s_sar
    stronger = optical if ρ > 1 else SAR     k = 1 − tanh(α · ρ_stronger),  ρ_stronger = max(ρ, 1/ρ)

Only the fused cross-entropy is back-propagated. Between ``backward()`` and ``step()`` the stronger
modality's encoder gradients become ``g·k`` (OGM) and, with ``mode: ogm_ge``, ``g·k + N(0, std(g))``
with the std of the unmodulated gradient (GE); the weaker encoder and the fused head are not touched.
As in the reference code's loop, only the encoders' convolution weights (4-D gradients) are modulated
(``ogm.params: conv``; ``all`` takes every encoder parameter), during the first
``ogm.modulation_epochs`` of the epochs (the reference: epochs 0–50 of 100, so 0.5).

The target has no labels: y is f_S's pseudo label with the MTTS stage-1 filter (``filter.*``); samples
the filter drops take no part in the loss nor in the scores. Under DDP the scores are summed over the
ranks before the ratio, and the GE noise comes from a generator seeded alike on every rank, so every
rank applies the same modulation to the same (all-reduced) gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from raypipe.engine.config import StageConfig
from raypipe.engine.objective import forward, masked_ce
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.objectives.pseudo_label import FilterConfig, PseudoLabel


@dataclass
class OGMConfig:
    mode: Literal["ogm_ge", "ogm", "off"] = "ogm_ge"  # off = the plain fused-CE student (ablation)
    alpha: float = 0.5  # the reference's range: 0.1-0.8
    modulation_epochs: float = 0.5  # fraction of the epochs, from the first, in which gradients are modulated
    params: Literal["conv", "all"] = "conv"  # which encoder gradients are modulated

    def validate(self, path: str) -> None:
        if not self.alpha >= 0:
            raise ConfigError(f"{path}.alpha", "must be >= 0")
        if not 0.0 <= self.modulation_epochs <= 1.0:
            raise ConfigError(f"{path}.modulation_epochs", "must be within [0, 1] (a fraction of train.epochs)")


@dataclass
class OGMGEConfig(StageConfig):
    filter: FilterConfig = field(default_factory=FilterConfig)
    ogm: OGMConfig = field(default_factory=OGMConfig)


def modality_scores(contributions: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_u = Σ_i softmax(out_u)_i[y_i]`` for each modality's share ``out_u`` of the fused logits."""
    return {m: F.softmax(out.float(), dim=1).gather(1, labels[:, None]).sum() for m, out in contributions.items()}


def modulation(s_opt: float, s_sar: float, alpha: float) -> tuple[str | None, float]:
    """``(stronger modality, k)``: ρ = s_opt / s_sar; the stronger one's gradients are scaled by
    ``k = 1 − tanh(α · ρ_stronger)``; a tie counts SAR as the stronger, as the reference's ``ρ > 1`` test
    does. ``(None, 1.0)`` when a score is 0 (no sample kept)."""
    if not (s_opt > 0 and s_sar > 0):
        return None, 1.0
    rho = s_opt / s_sar
    stronger, ratio = ("optical", rho) if rho > 1 else ("sar", 1.0 / rho)
    return stronger, 1.0 - math.tanh(alpha * ratio)


def modulate_(params, k: float, noise: bool, generator: torch.Generator | None = None) -> None:
    """In place: each gradient ``g`` becomes ``g·k``, plus ``N(0, std(g))`` (std of the unmodulated g) with
    ``noise``."""
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        std = g.float().std().item() if g.numel() > 1 else 0.0
        g.mul_(k)
        if noise and std > 0:
            g.add_(torch.randn(g.shape, generator=generator, dtype=torch.float32).to(g) * (std + 1e-8))


@OBJECTIVES.register("ogm_ge")
class OGMGE(PseudoLabel):
    Config = OGMGEConfig

    def __init__(self, config, inputs, teachers=None):
        super().__init__(config, inputs, teachers)
        self._active = False
        self._step: tuple[str | None, float] = (None, 1.0)
        self._generator: torch.Generator | None = None

    def check(self, path: str) -> None:
        super().check(path)
        if self.inputs != "both" or self.config.model.get("kind") != "multimodal":
            raise ConfigError(f"{path}.model", "OGM-GE needs a multimodal (optical + SAR) student")

    def start_epoch(self, epoch: int, epochs: int) -> None:
        o = self.config.ogm
        self._active = o.mode != "off" and epoch < math.ceil(o.modulation_epochs * epochs)
        if self._generator is None:  # alike on every rank: the same noise on the same all-reduced gradients
            self._generator = torch.Generator().manual_seed(1_000_003 * (self.config.train.seed + 1))

    def loss(self, model, teachers, batch):
        y, keep = self.pseudo_labels(teachers, batch)
        out = forward(model, batch, self.inputs)
        loss = masked_ce(out.fused, y, keep)
        net = getattr(model, "module", model)  # under DDP
        with torch.no_grad():
            c_opt, c_sar = net.fused_contributions(out)
            scores = modality_scores({"optical": c_opt[keep], "sar": c_sar[keep]}, y[keep])
            s = torch.stack([scores["optical"], scores["sar"]])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(s)
        stronger, k = modulation(float(s[0]), float(s[1]), self.config.ogm.alpha)
        self._step = (stronger, k) if self._active else (None, 1.0)
        parts = {"ce": loss.detach(), "kept": keep.float().mean(),
                 "ogm/ratio": (s[0] / s[1].clamp_min(1e-12)).detach(),
                 "ogm/k": torch.tensor(self._step[1])}
        return loss, parts

    def after_backward(self, model, optimizer: str) -> None:
        stronger, k = self._step
        if stronger is None:
            return
        net = getattr(model, "module", model)
        encoder = net.optical_encoder if stronger == "optical" else net.sar_encoder
        params = [p for p in encoder.parameters() if self.config.ogm.params == "all" or p.dim() == 4]
        modulate_(params, k, noise=self.config.ogm.mode == "ogm_ge", generator=self._generator)
