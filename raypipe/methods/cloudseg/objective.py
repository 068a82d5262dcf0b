"""CloudSeg's objectives: ``seg_supervised`` (the teacher and every reference) and ``cloudseg_student``.

``seg_supervised``: cross-entropy of the model's logits, brought bilinearly to the label grid, against
the label map, ignoring 255 (no-data and the WorldCover classes CloudSeg leaves out).

``cloudseg_student`` (DESIGN §6): the student sees the cloudy optical and SAR; the frozen teacher sees
the **cloud-free** optical of the same tile and the same SAR. With ``M`` the cloud mask::

    L = ce_weight · CE(student logits, labels)
      + cr_weight · mean((1 + cloud_weight · M) · ((restored − clear optical)² + eps)^power)
      + kd_weight · mean((hint_s − hint_t)² · (1 − M))        # cross-stream decoder features, cloud-free pixels

Knobs (``stages.student.loss.*``): ``ce_weight``, ``cr_weight``, ``kd_weight`` (1, 1, 1), ``cloud_weight``
(5), ``charbonnier_eps`` (1e-6), ``charbonnier_power`` (0.45), ``kd_normalise`` (``all``: CloudSeg's mean
over every element; ``clear``: over the cloud-free ones). The mask ``M`` is the training-time mask of
the data (M3M-CR's own masks; simulated clouds' masks on WHU-OPT-SAR).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from raypipe.data.labels import IGNORE_INDEX
from raypipe.engine.config import StageConfig
from raypipe.engine.objective import Objective, forward, main_logits
from raypipe.engine.registry import OBJECTIVES
from raypipe.engine.segmentation import to_label_grid
from raypipe.errors import ConfigError
from raypipe.losses.segmentation import cloud_removal_loss, masked_hint_loss


def segmentation_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the label grid, 255 ignored; a zero touching every logit when a batch has no
    labelled pixel (a mean over nothing would be NaN)."""
    logits = to_label_grid(logits, labels.shape[-2:])
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


@OBJECTIVES.register("seg_supervised")
class SegSupervised(Objective):
    uses_labels = True
    uses_cloud_mask = False  # training never reads the mask (evaluation splits pixels by it)

    def loss(self, model, teachers, batch):
        loss = segmentation_ce(main_logits(forward(model, batch, self.inputs)), batch["label_map"])
        return loss, {"ce": loss.detach()}


@dataclass
class StudentLoss:
    ce_weight: float = 1.0
    cr_weight: float = 1.0
    kd_weight: float = 1.0
    cloud_weight: float = 5.0
    charbonnier_eps: float = 1e-6
    charbonnier_power: float = 0.45
    kd_normalise: Literal["all", "clear"] = "all"

    def validate(self, path: str) -> None:
        for name in ("ce_weight", "cr_weight", "kd_weight", "cloud_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")
        if not self.charbonnier_eps > 0:
            raise ConfigError(f"{path}.charbonnier_eps", "must be > 0")
        if not 0 < self.charbonnier_power <= 1:
            raise ConfigError(f"{path}.charbonnier_power", "must be within (0, 1]")


@dataclass
class StudentConfig(StageConfig):
    loss: StudentLoss = field(default_factory=StudentLoss)


@OBJECTIVES.register("cloudseg_student")
class CloudSegStudent(Objective):
    Config = StudentConfig
    uses_labels = True

    def check(self, path: str) -> None:
        if list(self.teacher_inputs) != ["teacher"] or self.teacher_inputs["teacher"] != "both" or self.inputs != "both":
            raise ConfigError(path, "cloudseg_student needs optical + SAR inputs and one optical + SAR teacher stage "
                              "named 'teacher'")
        if self.config.model.get("kind") != "cloudseg" or self.config.model.get("student") is not True:
            raise ConfigError(f"{path}.model.student", "the student must be a 'cloudseg' model with student: true "
                              "(its spatial gate and cloud-removal head)")
        if self.config.train.teacher_outputs != "in_loop":
            raise ConfigError(f"{path}.train.teacher_outputs", "must be 'in_loop': the hint needs the teacher's "
                              "decoder features, not its logits")

    def loss(self, model, teachers, batch):
        c = self.config.loss
        out = model(batch["optical"], batch["sar"])
        with torch.no_grad():
            t = teachers["teacher"](batch["optical_clear"], batch["sar"])
        ce = segmentation_ce(out.logits, batch["label_map"])
        cr = cloud_removal_loss(out.restored.float(), batch["optical_clear"].float(), batch["cloud_mask"],
                                c.cloud_weight, c.charbonnier_eps, c.charbonnier_power)
        kd = masked_hint_loss(out.hint.float(), t.hint.float(), batch["cloud_mask"], c.kd_normalise)
        loss = c.ce_weight * ce + c.cr_weight * cr + c.kd_weight * kd
        return loss, {"ce": ce.detach(), "cr": cr.detach(), "kd": kd.detach()}
