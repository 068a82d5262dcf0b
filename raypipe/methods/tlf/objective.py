"""``tlf``: late fusion trained without target labels. Each modality's head learns f_S's filtered pseudo
labels on its own (the two losses touch disjoint parameters, so this is two independent models in one
module); the prediction is the average of the two unimodal logit vectors (``fusion: late``)."""

from __future__ import annotations

from raypipe.engine.objective import forward, masked_ce
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.objectives.pseudo_label import PseudoLabel


@OBJECTIVES.register("tlf")
class LateFusionPseudoLabel(PseudoLabel):
    def check(self, path: str) -> None:
        super().check(path)
        model = self.config.model
        if model.get("kind") != "multimodal" or model.get("fusion") != "late":
            raise ConfigError(f"{path}.model.fusion", "TLF needs a multimodal model with fusion: late "
                                                      "(the prediction is the mean of the unimodal logits)")

    def loss(self, model, teachers, batch):
        pseudo, keep = self.pseudo_labels(teachers, batch)
        out = forward(model, batch, self.inputs)
        ce_opt, ce_sar = masked_ce(out.optical, pseudo, keep), masked_ce(out.sar, pseudo, keep)
        return ce_opt + ce_sar, {"ce_optical": ce_opt.detach(), "ce_sar": ce_sar.detach(), "kept": keep.float().mean()}
