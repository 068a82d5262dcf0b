"""What each stage optimises, as a loss over a batch: methods are plugged into one loop as objectives.

* :class:`Supervised`   — stage 0 (source f_S): cross-entropy with labels.
* :class:`PseudoLabel`  — stage 1 (f_T_Opt, f_T_SAR): cross-entropy with f_S's pseudo labels on the
  target training set, kept only where f_S's logits pass the filter (no target labels).
* :class:`Distill`      — stage 2 (f_T): KD from f_S and the two auxiliary models, weighted per
  sample by IRM (``raypipe.methods.irm.target_distillation_loss``), no filtering by default.

An objective names the inputs its student takes (``optical``, ``sar`` or ``both``) and the teachers it
needs; the loop loads those teachers frozen and passes them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from raypipe.methods import filter_pseudo_labels, target_distillation_loss


def student_logits(model, batch: dict, inputs: str) -> Any:
    """Forward a student (or teacher) on the inputs it takes."""
    if inputs == "both":
        return model(batch["optical"], batch["sar"])
    return model(batch[inputs])


def predictions(model, batch: dict, inputs: str) -> torch.Tensor:
    out = student_logits(model, batch, inputs)
    return (out.fused if hasattr(out, "fused") else out).argmax(dim=1)


TEACHER_INPUTS = {"source": "optical", "aux_optical": "optical", "aux_sar": "sar"}


def teacher_logits(teachers: dict, name: str, batch: dict) -> torch.Tensor:
    """A frozen teacher's logits for the batch: precomputed by Ray Data batch inference (a
    ``logits/<name>`` column joined to the rows) when present, else computed here."""
    column = f"logits/{name}"
    if column in batch:
        return batch[column].float()
    return teachers[name](batch[TEACHER_INPUTS[name]]).float()


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over kept samples; a zero that still touches every output when none is kept
    (so DDP sees every parameter used, and the step stays a no-op)."""
    if keep.any():
        return F.cross_entropy(logits[keep], labels[keep])
    return logits.sum() * 0.0


@dataclass
class Supervised:
    inputs: str = "optical"
    teachers: tuple[str, ...] = ()

    def loss(self, model, teachers: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        out = student_logits(model, batch, self.inputs)
        loss = F.cross_entropy(out, batch["label"])
        return loss, {"ce": loss.detach()}


@dataclass
class PseudoLabel:
    inputs: str  # "optical" (f_T_Opt) or "sar" (f_T_SAR)
    rule: str = "max_softmax"
    threshold: float = 0.6
    temperature: float = 1.0
    enabled: bool = True
    max_cloud_fraction: float = 1.0  # raypipe extension: also drop samples cloudier than this
    teachers: tuple[str, ...] = ("source",)

    def loss(self, model, teachers: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            src = teacher_logits(teachers, "source", batch)
            rule = self.rule if self.enabled else "none"
            pseudo, keep = filter_pseudo_labels(src, rule, self.threshold, self.temperature,
                                                batch.get("cloud_fraction"), self.max_cloud_fraction)
        out = student_logits(model, batch, self.inputs)
        loss = _masked_ce(out, pseudo, keep)
        return loss, {"ce": loss.detach(), "kept": keep.float().mean()}


@dataclass
class Distill:
    temperature: float = 4.0
    irm_mode: str = "per_sample"
    irm_hp: dict = field(default_factory=dict)
    lambda_src: float = 1.0
    lambda_aux: float = 1.0
    lambda_uni: float = 0.5
    filter_enabled: bool = False
    filter_rule: str = "max_softmax"
    filter_threshold: float = 0.6
    filter_max_cloud_fraction: float = 1.0
    src_weighting: str = "none"  # "irm_opt": f_S's KD term weighted by w_O (raypipe extension)
    inputs: str = "both"
    teachers: tuple[str, ...] = ("source", "aux_optical", "aux_sar")

    def loss(self, model, teachers: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            src = teacher_logits(teachers, "source", batch)
            opt = teacher_logits(teachers, "aux_optical", batch)
            sar = teacher_logits(teachers, "aux_sar", batch)
            mask = None
            if self.filter_enabled:  # ablation: filtering in stage 2
                _, mask = filter_pseudo_labels(src, self.filter_rule, self.filter_threshold,
                                               cloud_fraction=batch.get("cloud_fraction"),
                                               max_cloud_fraction=self.filter_max_cloud_fraction)
        out = model(batch["optical"], batch["sar"])
        loss, parts = target_distillation_loss(
            out, src, opt, sar, irm_mode=self.irm_mode, T=self.temperature, lambda_src=self.lambda_src,
            lambda_aux=self.lambda_aux, lambda_uni=self.lambda_uni, src_weighting=self.src_weighting,
            irm_hp=self.irm_hp, sample_mask=mask, cloud_fraction=batch.get("cloud_fraction"))
        return loss, {k: v.detach().float().mean() for k, v in parts.items() if torch.is_tensor(v)}


def build_objective(kind: str, params: dict):
    return {"supervised": Supervised, "pseudo_label": PseudoLabel, "distill": Distill}[kind](**params)
