"""``supervised``: cross-entropy with the batch's labels."""

from __future__ import annotations

import torch.nn.functional as F

from raypipe.engine.objective import Objective, forward, main_logits
from raypipe.engine.registry import OBJECTIVES


@OBJECTIVES.register("supervised")
class Supervised(Objective):
    uses_labels = True  # on target data this makes a stage an oracle (the engine marks it)

    def loss(self, model, teachers, batch):
        out = forward(model, batch, self.inputs)
        loss = F.cross_entropy(main_logits(out), batch["label"])
        return loss, {"ce": loss.detach()}
