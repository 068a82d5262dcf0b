"""SPL's two objectives.

``spl_removal`` trains the cloud remover on self-generated pairs: the source domain's cloud-free
tiles (``optical_clear``) and the same tiles under simulated clouds (``optical``; View ``simulate``),
since no cloud-free reference of the target exists. Per batch::

    keep = the easiest fraction p(epoch) of the batch by texture complexity of the clear tile
    G:  L1(r, c) + ssim_weight · (1 − SSIM(r, c)) + adv_weight · BCE(D(r), real)      r = x + G(x)
    D:  ½ [BCE(D(c), real) + BCE(D(r.detach()), fake)]

over the kept samples, two optimisers (``generator``, ``discriminator``). p grows linearly from
``pace.start`` in the first epoch to 1 at ``pace.full_at`` of the epochs (self-paced, easy → hard).
It reads no cloud mask.

``spl_compose`` trains nothing: the stage's model is the trained remover followed by f_S, assembled
from the two teacher stages (``restore_classify``), so target cloudy optical is restored, then
classified by the source model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from raypipe.engine.config import StageConfig
from raypipe.engine.objective import Objective, default_optimizer
from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.losses.restoration import pace_fraction, self_paced_keep, ssim, texture_complexity
from raypipe.models import build_model


@dataclass
class PaceConfig:
    enabled: bool = True  # false: every sample from the first epoch (the no-pacing ablation)
    start: float = 0.5  # fraction of each batch (its easiest samples) in the first epoch
    full_at: float = 0.5  # fraction of the epochs after which every sample is used

    def validate(self, path: str) -> None:
        if not 0.0 < self.start <= 1.0:
            raise ConfigError(f"{path}.start", "must be within (0, 1]")
        if not 0.0 <= self.full_at <= 1.0:
            raise ConfigError(f"{path}.full_at", "must be within [0, 1]")


@dataclass
class RemovalConfig(StageConfig):
    ssim_weight: float = 1.0
    adv_weight: float = 0.01
    pace: PaceConfig = field(default_factory=PaceConfig)

    def validate(self, path: str) -> None:
        for name in ("ssim_weight", "adv_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), float(real)))


@OBJECTIVES.register("spl_removal")
class CloudRemoval(Objective):
    Config = RemovalConfig
    uses_cloud_mask = False  # pairs come from the simulator on cloud-free tiles; the mask is never read

    def __init__(self, config, inputs, teachers=None):
        super().__init__(config, inputs, teachers)
        self.fraction = 1.0

    def check(self, path: str) -> None:
        if self.inputs != "optical" or self.config.model.get("kind") != "declouder":
            raise ConfigError(f"{path}.model", "the cloud remover is a 'declouder' model on optical input")

    def configure_optimizers(self, model, train):
        net = getattr(model, "module", model)
        return {"generator": default_optimizer(net.generator.parameters(), train),
                "discriminator": default_optimizer(net.discriminator.parameters(), train)}

    def start_epoch(self, epoch: int, epochs: int) -> None:
        p = self.config.pace
        self.fraction = pace_fraction(epoch, epochs, p.start, p.full_at) if p.enabled else 1.0

    def loss(self, model, teachers, batch):
        x, clear = batch["optical"], batch["optical_clear"]
        keep = self_paced_keep(texture_complexity(clear), self.fraction)
        x, clear = x[keep], clear[keep]
        net = getattr(model, "module", model)
        restored = model(x).restored
        l1 = (restored.float() - clear.float()).abs().mean()
        s = ssim(restored, clear)
        adv = _bce(net.discriminator(restored), True)
        g = l1 + self.config.ssim_weight * (1 - s) + self.config.adv_weight * adv
        d = 0.5 * (_bce(net.discriminator(clear), True) + _bce(net.discriminator(restored.detach()), False))
        parts = {"l1": l1.detach(), "ssim": s.detach(), "adv": adv.detach(), "d": d.detach(),
                 "kept": keep.float().mean()}
        return {"generator": g, "discriminator": d}, parts


@OBJECTIVES.register("spl_compose")
class AssembledRemoverThenSource(Objective):
    """The remover (teacher ``declouder``) followed by f_S (teacher ``source``); nothing trained."""

    Config = StageConfig
    assembles = True
    uses_cloud_mask = False

    def check(self, path: str) -> None:
        if set(self.teacher_inputs) != {"source", "declouder"}:
            raise ConfigError(path, f"spl_compose needs the teachers source and declouder, has {list(self.teacher_inputs)}")
        if self.config.model.get("kind") != "restore_classify":
            raise ConfigError(f"{path}.model", "must be a 'restore_classify' model")

    def assemble(self, spec: dict, teachers) -> dict:
        model = build_model(spec, "stages.classify.model")
        for part, name in (("restorer", "declouder"), ("classifier", "source")):
            try:
                getattr(model, part).load_state_dict(teachers[name]["state"])
            except RuntimeError as e:
                raise ConfigError(f"stages.classify.model.{part}",
                                  f"does not match stage {name}'s trained model: {str(e).splitlines()[0]}") from None
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def loss(self, model, teachers, batch):  # never called: the stage is assembled
        raise RuntimeError("spl_compose trains nothing")
