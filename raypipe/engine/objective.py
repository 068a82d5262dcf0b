"""What a stage optimises: an :class:`Objective` plugged into the one training loop.

An objective is built on the driver from its stage's config section (``Config``, a dataclass validated
with its dotted path before anything trains) and shipped to the Ray Train workers as it is. The loop
(:mod:`raypipe.engine.loop`) calls, per batch::

    losses, parts = objective.loss(model, teachers, batch)     # one loss, or {optimiser name: loss}
    for name, optimiser in optimisers.items():                   # in declaration order
        optimiser.zero_grad(); losses[name].backward()
        objective.after_backward(model, name)                    # e.g. OGM-GE gradient modulation
        optimiser.step()

Hooks with defaults:

* ``configure_optimizers(model, train)`` → ``{name: optimiser}``; the default is one AdamW (or SGD)
  over every parameter, from ``train.*``. Adversarial methods return several (generator, discriminator).
* ``after_backward(model, name)``: between ``backward()`` and ``step()``; nothing by default.
* ``start_epoch(epoch, epochs)``: before each training epoch (0-based, of ``epochs``), e.g. OGM-GE's
  modulation in the early epochs only; nothing by default.
* ``diagnostics(ctx)``: metrics logged on the driver before training (e.g. how many pseudo labels
  pass a filter); none by default.

An objective with ``assembles = True`` trains nothing: ``assemble(spec, teachers)`` returns the stage's
model state put together from its (frozen) teachers' states, on the driver (SPL's cloud remover
followed by f_S); the stage is then evaluated, recorded and reused like any other.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from raypipe.engine.config import StageConfig, TrainConfig


def forward(model, batch: Mapping[str, Any], inputs: str) -> Any:
    """A model's output on the inputs it takes (``optical``, ``sar`` or ``both``)."""
    if inputs == "both":
        return model(batch["optical"], batch["sar"])
    return model(batch[inputs])


def main_logits(out: Any) -> torch.Tensor:
    """The logits a prediction is made from: a multi-modal model's fused head, a segmentation model's
    ``logits`` (:class:`raypipe.models.unet.SegOutput`), else the output itself."""
    if hasattr(out, "fused"):
        return out.fused
    return out.logits if hasattr(out, "logits") else out


class Objective:
    Config: type = StageConfig
    # Whether training reads the cloud mask / fraction: where those are the simulator's truth the stage is
    # an oracle (an objective that never reads them says so, and is not marked).
    uses_cloud_mask = True
    # True: the stage's model is assembled from its teachers' (``assemble``), not trained
    assembles = False

    def __init__(self, config: Any, inputs: str, teachers: Mapping[str, str] | None = None):
        self.config = config  # this stage's config section (an instance of ``Config``)
        self.inputs = inputs  # the student's inputs
        self.teacher_inputs = dict(teachers or {})  # teacher stage name -> the inputs that model takes

    # --- driver side ------------------------------------------------------------------------------
    def check(self, path: str) -> None:
        """Checks that need the stage as well as the config (e.g. which teachers it has); ``path`` is
        the stage's config path (``stages.<name>``). Raise ConfigError naming the field."""

    def diagnostics(self, ctx) -> dict[str, float]:
        """Metrics to log before training; ``ctx`` is a :class:`raypipe.engine.run.StageContext`."""
        return {}

    # --- worker side ------------------------------------------------------------------------------
    def configure_optimizers(self, model: torch.nn.Module, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"main": default_optimizer(model.parameters(), train)}

    def loss(self, model, teachers: Mapping[str, torch.nn.Module], batch: Mapping[str, Any]
             ) -> tuple[torch.Tensor | dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def after_backward(self, model: torch.nn.Module, optimizer: str) -> None:
        """Called between ``backward()`` and ``step()`` of each optimiser."""

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before each training epoch (``epoch`` 0-based, of ``epochs``)."""

    def assemble(self, spec: dict, teachers: Mapping[str, dict]) -> dict:
        """With ``assembles``: the state dict of the model ``spec`` from ``teachers`` (name -> ``{"spec",
        "state", "inputs"}``), on the driver."""
        raise NotImplementedError

    # --- helpers ----------------------------------------------------------------------------------
    def teacher_logits(self, teachers: Mapping[str, torch.nn.Module], name: str, batch: Mapping[str, Any]
                       ) -> torch.Tensor:
        """A frozen teacher's logits for the batch: precomputed by Ray Data batch inference (a
        ``logits/<name>`` column joined to the rows) when present, else computed here on the inputs
        that teacher takes."""
        column = f"logits/{name}"
        if column in batch:
            return batch[column].float()
        return main_logits(forward(teachers[name], batch, self.teacher_inputs[name])).float()


def default_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov,
                               weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over kept samples; a zero that still touches every output when none is kept
    (so DDP sees every parameter used, and the step stays a no-op)."""
    if keep.any():
        return torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    return logits.sum() * 0.0
