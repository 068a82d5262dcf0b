"""Image restoration models (SPL's cloud removal) and a restorer → classifier composite.

``declouder``: a U-Net generator (the ``segnet`` kind, one output channel per input band) predicting
a residual, ``restored = x + G(x)``, and a PatchGAN discriminator (strided 4 × 4 convolutions, one
real/fake logit per patch) used only in training::

    {"kind": "declouder", "in_channels": 13,
     "generator": {"encoder": {"type": "resnet", "depth": 10, "width": 16}, "decoder_channels": [...], "norm": "group"},
     "discriminator": {"width": 16, "layers": 2}}

``restore_classify``: ``classifier(restorer(x).restored)``, both given as specs (``in_channels`` and
``num_classes`` passed down); SPL assembles it from its trained stages, nothing of it trains::

    {"kind": "restore_classify", "in_channels": 13, "num_classes": 10,
     "restorer": {"kind": "declouder", ...}, "classifier": {"kind": "resnet", ...}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from raypipe.errors import ConfigError
from raypipe.models.factory import _check_keys, _check_mapping, _int, _join, build_model, register_model


@dataclass
class RestorationOutput:
    restored: torch.Tensor  # (B, C, H, W), the input's units (normalised reflectance)


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, width: int = 16, layers: int = 2):
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_channels
        for i in range(layers):
            out = width * 2 ** i
            blocks += [nn.Conv2d(ch, out, 4, stride=2, padding=1)]
            if i:
                blocks += [nn.GroupNorm(min(8, out), out)]
            blocks += [nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        blocks += [nn.Conv2d(ch, 1, 3, padding=1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Declouder(nn.Module):
    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator

    def forward(self, x: torch.Tensor) -> RestorationOutput:
        return RestorationOutput(restored=x + self.generator(x).logits)


class RestoreThenClassify(nn.Module):
    def __init__(self, restorer: nn.Module, classifier: nn.Module):
        super().__init__()
        self.restorer, self.classifier = restorer, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.restorer(x).restored)


_DECLOUDER_KEYS = {"kind", "in_channels", "num_classes", "generator", "discriminator"}
_GENERATOR_KEYS = {"encoder", "decoder_channels", "norm"}


@register_model("declouder")
def _declouder(spec: Mapping[str, Any], field: str) -> Declouder:
    _check_keys(spec, _DECLOUDER_KEYS, field)
    bands = _int(spec, "in_channels", field, minimum=2)
    f = _join(field, "generator")
    gen = dict(_check_mapping(spec.get("generator", {}), f))
    _check_keys(gen, _GENERATOR_KEYS, f)
    gen.setdefault("encoder", {"type": "resnet", "depth": 10, "width": 16})
    generator = build_model({"kind": "segnet", "in_channels": bands, "num_classes": bands, **gen}, f)
    f = _join(field, "discriminator")
    disc = _check_mapping(spec.get("discriminator", {}), f)
    _check_keys(disc, {"width", "layers"}, f)
    discriminator = PatchDiscriminator(bands, _int(disc, "width", f, default=16), _int(disc, "layers", f, default=2))
    return Declouder(generator, discriminator)


@register_model("restore_classify")
def _restore_classify(spec: Mapping[str, Any], field: str) -> RestoreThenClassify:
    _check_keys(spec, {"kind", "in_channels", "num_classes", "restorer", "classifier"}, field)
    bands, classes = _int(spec, "in_channels", field), _int(spec, "num_classes", field, minimum=2)
    parts = {}
    for key in ("restorer", "classifier"):
        f = _join(field, key)
        if key not in spec:
            raise ConfigError(f, "is required (a model spec)")
        sub = dict(_check_mapping(spec[key], f))
        sub.setdefault("in_channels", bands)
        if key == "classifier":
            sub.setdefault("num_classes", classes)
        parts[key] = build_model(sub, f)
    return RestoreThenClassify(parts["restorer"], parts["classifier"])
