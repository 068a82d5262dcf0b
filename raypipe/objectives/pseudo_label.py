"""``pseudo_label``: learn a teacher's pseudo labels where its logits pass a filter (no target labels).

``stages.<stage>.filter.*`` (:class:`FilterConfig`): ``rule`` (``max_softmax`` or ``margin``),
``threshold``, ``temperature`` of the softmax the rule reads, ``enabled`` (false = the no-filtering
ablation) and ``max_cloud_fraction`` (a raypipe extension, off at 1.0). See docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from raypipe.engine.config import StageConfig
from raypipe.engine.objective import Objective, forward, main_logits, masked_ce
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.losses import filter_pseudo_labels, filter_scores, filter_stats


@dataclass
class FilterConfig:
    """Pseudo-label filtering by the teacher's logits (MTTS stage 1, after KDHN)."""

    enabled: bool = True
    rule: Literal["max_softmax", "margin"] = "max_softmax"
    threshold: float = 0.6
    temperature: float = 1.0
    # raypipe extension (not published): also drop samples whose cloud fraction (pipeline cloud
    # stage) exceeds this, however confident f_S is; 1.0 = off. See docs/methods.md.
    max_cloud_fraction: float = 1.0

    def validate(self, path: str) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"{path}.threshold", "must be within [0, 1]")
        if not self.temperature > 0:
            raise ConfigError(f"{path}.temperature", "must be > 0")
        if not 0.0 <= self.max_cloud_fraction <= 1.0:
            raise ConfigError(f"{path}.max_cloud_fraction", "must be within [0, 1] (1 = off)")


def apply_filter(f: FilterConfig, logits: torch.Tensor, cloud_fraction=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pseudo labels, keep mask)`` for teacher ``logits`` under filter settings ``f``."""
    return filter_pseudo_labels(logits, f.rule if f.enabled else "none", f.threshold, f.temperature,
                                cloud_fraction, f.max_cloud_fraction)


@dataclass
class PseudoLabelConfig(StageConfig):
    filter: FilterConfig = field(default_factory=FilterConfig)


@OBJECTIVES.register("pseudo_label")
class PseudoLabel(Objective):
    Config = PseudoLabelConfig

    def check(self, path: str) -> None:
        if len(self.teacher_inputs) != 1:
            raise ConfigError(f"{path}", f"pseudo_label learns from exactly one teacher, has {list(self.teacher_inputs)}")

    @property
    def teacher(self) -> str:
        return next(iter(self.teacher_inputs))

    def pseudo_labels(self, teachers, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, keep)``: the teacher's filtered pseudo labels for the batch (no gradient)."""
        with torch.no_grad():
            logits = self.teacher_logits(teachers, self.teacher, batch)
            return apply_filter(self.config.filter, logits, batch.get("cloud_fraction"))

    def loss(self, model, teachers, batch):
        pseudo, keep = self.pseudo_labels(teachers, batch)
        out = main_logits(forward(model, batch, self.inputs))
        loss = masked_ce(out, pseudo, keep)
        return loss, {"ce": loss.detach(), "kept": keep.float().mean()}

    def diagnostics(self, ctx) -> dict[str, float]:
        """How many training samples pass the teacher's filter, per class and per cloud bucket; the
        pseudo labels' accuracy where the manifest has labels (never used in training)."""
        f = self.config.filter
        pred = ctx.predict(self.teacher)
        logits = torch.from_numpy(pred["logits"])
        labels, keep = apply_filter(f, logits, torch.from_numpy(pred["cloud_fraction"]))
        target = pred["label"] if (pred["label"] >= 0).all() else None
        stats = filter_stats(labels.numpy(), keep.numpy(), len(ctx.classes), ctx.classes,
                             np.asarray(pred.get("bucket_fraction", pred["cloud_fraction"])), target=target,
                             scores=filter_scores(logits, f.rule, f.temperature).numpy())
        return {f"pseudo/{k}": float(v) for k, v in stats.items() if v is not None}
