"""``supervised``: cross-entropy with the batch's labels."""

from __future__ import annotations

import torch.nn.functional as F

from raypipe.engine.objective import Objective, forward, main_logits
from raypipe.engine.registry import OBJECTIVES


@OBJECTIVES.register("supervised")
class Supervised(Objective):
    def loss(self, model, teachers, batch):
        out = forward(model, batch, self.inputs)
        loss = F.cross_entropy(main_logits(out), batch["label"])
        return loss, {"ce": loss.detach()}
