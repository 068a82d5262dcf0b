"""MTTS's own knobs: ``stages.target.*`` (the IRM distillation). Stage 1's ``filter.*`` is the shared
:class:`raypipe.objectives.FilterConfig`; every stage has ``model``, ``train.*`` and ``from_run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raypipe.engine.config import StageConfig
from raypipe.errors import ConfigError
from raypipe.objectives import FilterConfig


@dataclass
class IRMConfig:
    """Information Regulation Mechanism (see docs/methods.md for the formulas). The field names are
    ``raypipe.losses.irm_weights``' keyword names, so the config goes to the loss as it is."""

    mode: Literal["per_sample", "batch", "off"] = "per_sample"
    alpha: float = 1.0
    w_min: float = 0.1
    temperature: float = 1.0
    reference: Literal["consensus", "source"] = "consensus"
    # raypipe extension (not published): scale the optical share by the clear fraction 1 − c after the
    # split, so w_O − w_min ≤ (1 − 2 w_min)(1 − c): w_O = w_min on a fully cloudy tile. See docs/methods.md.
    cloud_prior: bool = False

    def validate(self, path: str) -> None:
        if not self.alpha >= 0:
            raise ConfigError(f"{path}.alpha", f"must be >= 0, got {self.alpha!r}")
        if not 0.0 <= self.w_min < 0.5:
            raise ConfigError(f"{path}.w_min", "must be within [0, 0.5)")
        if not self.temperature > 0:
            raise ConfigError(f"{path}.temperature", "must be > 0")
        if self.mode == "off" and self.cloud_prior:
            raise ConfigError(f"{path}.cloud_prior", "has no effect with mode=off (equal weights): turn one of them off")


@dataclass
class DistillConfig(StageConfig):
    """MTTS stage 2: f_T distilled from f_S and both auxiliary models through IRM."""

    irm: IRMConfig = field(default_factory=IRMConfig)
    filter: FilterConfig = field(default_factory=lambda: FilterConfig(enabled=False))  # ablation: filter in stage 2
    temperature: float = 4.0  # KD temperature T
    lambda_src: float = 1.0  # weight of KD from f_S on the fused head
    lambda_aux: float = 1.0  # weight of the IRM-weighted KD from the auxiliary models
    lambda_uni: float = 0.5  # weight of each unimodal head's KD from its own teacher
    # "irm_opt" (raypipe extension): f_S's KD term on the fused head is weighted by IRM's w_O, since
    # f_S sees the optical input only; "none" = as published
    src_weighting: Literal["none", "irm_opt"] = "none"

    def validate(self, path: str) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"{path}.temperature", "must be > 0")
        for name in ("lambda_src", "lambda_aux", "lambda_uni"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")
