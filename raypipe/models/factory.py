"""Build models from plain-dict specs (configuration as data), with errors naming the dotted field.

Specs::

    {"kind": "resnet", "depth": 18, "width": 64, "in_channels": 10, "num_classes": 10,
     "stem": "small", "zero_init_residual": False, "dropout": 0.0}

    {"kind": "multimodal", "num_classes": 10, "fusion": "concat", "variational": False,
     "optical": {"depth": 18, "in_channels": 10, "width": 64, "stem": "small"},
     "sar":     {"depth": 10, "in_channels": 2, "width": 32, "stem": "small"}}

    {"kind": "early_fusion", "num_classes": 10, "optical": {"in_channels": 10}, "sar": {"in_channels": 2},
     "encoder": {"depth": 18, "width": 64, "stem": "small"}}

``early_fusion`` stacks the optical and SAR bands into one ResNet's input (SAR resized to the optical
grid when the two differ, as on M3M-CR's 3 m / 10 m tiles).

Segmentation (CloudSeg, DESIGN §6; logits at the input resolution, see ``raypipe.models.unet``)::

    {"kind": "cloudseg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
     "encoder": {"type": "mit", "variant": "tiny", "drop_path": 0.0, "pretrained": "", "strict": True},
     "decoder_channels": [32, 16, 16, 16, 16], "student": False, "norm": "batch"}

    {"kind": "segnet", "num_classes": 6, "in_channels": 4, "encoder": {...}, "decoder_channels": [...],
     "norm": "batch"}

    {"kind": "early_fusion_seg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
     "encoder": {...}, "decoder_channels": [...], "norm": "batch"}

Their ``encoder`` is ``{"type": "mit", "variant": "tiny"|"b0".."b5", "drop_path", "pretrained", "strict"}``
or ``{"type": "resnet", "depth": 18, "width": 64, "pretrained", "strict"}``; defaults: the tiny MiT
(drop_path 0.0 for tiny, 0.1 for b0..b5), depth 18 and width 64 for resnet, no pretrained weights
(``pretrained``: a local path or s3:// URI of an encoder state dict; ``strict`` true: missing or
unexpected keys are an error). ``decoder_channels``: 5 widths, default (32, 16, 16, 16, 16) for tiny,
(256, 128, 64, 32, 16) otherwise. ``norm``: "batch" or "group". ``student`` (cloudseg): adds the
optical spatial gates and the cloud-removal head.

Encoder specs inside a multimodal spec are resnet specs without ``num_classes`` (the heads
belong to the multimodal model); their ``kind`` may be omitted or ``"resnet"``.
Defaults: depth 18, width 64, stem "standard", zero_init_residual False, dropout 0, norm "batch",
fusion "concat", variational False. ``in_channels`` and ``num_classes`` are required.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from raypipe.errors import ConfigError
from raypipe.registry import Registry
from raypipe.models.cloudseg import CloudSegNet
from raypipe.models.mit import MIT_VARIANTS
from raypipe.models.multimodal import FUSIONS, MODALITIES, MultiModalNet
from raypipe.models.resnet import RESNET_DEPTHS, RESNET_NORMS, RESNET_STEMS, ResNet
from raypipe.models.unet import ENCODER_TYPES, EarlyFusionSegNet, SegNet, default_decoder_channels

__all__ = ["build_model", "model_spec_in_channels", "check_model_inputs", "MODEL_KINDS", "TWO_INPUT_KINDS", "MODELS",
           "register_model"]

# Model kinds are open: ``register_model("my_kind", build_fn)`` where ``build_fn(spec, field) -> nn.Module``
# validates its own spec (raising ConfigError naming ``field.<key>``) and builds the model.
MODELS = Registry("model kind")
MODEL_KINDS: tuple[str, ...] = ("resnet", "multimodal", "early_fusion", "segnet", "early_fusion_seg",
                                "cloudseg")  # the built-in kinds
# Kinds that take optical and SAR as two inputs (``forward(optical, sar)``; their specs carry
# ``optical.in_channels`` and ``sar.in_channels``): filled by ``register_model(..., two_inputs=True)``.
TWO_INPUT_KINDS: set[str] = set()


def register_model(kind: str, build=None, *, two_inputs: bool = False):
    """Register ``build(spec, field) -> nn.Module`` under ``kind`` (or use as ``@register_model(kind)``).
    ``two_inputs=True``: the model takes optical and SAR (added to ``TWO_INPUT_KINDS``)."""
    def put(fn):
        out = MODELS.register(kind, fn)
        if two_inputs:
            TWO_INPUT_KINDS.add(kind)
        return out

    return put if build is None else put(build)


_RESNET_KEYS = {"kind", "depth", "width", "in_channels", "num_classes", "stem", "zero_init_residual", "dropout",
                "norm"}
_MULTIMODAL_KEYS = {"kind", "num_classes", "fusion", "variational"} | set(MODALITIES)


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _int(spec: Mapping[str, Any], key: str, field: str, *, default: Any = None, minimum: int = 1,
         choices: Any = None) -> int:
    f = _join(field, key)
    if key not in spec:
        if default is None:
            raise ConfigError(f, "is required")
        return default
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f, f"must be an integer, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f, f"must be one of {sorted(choices)}, got {v}")
    if v < minimum:
        raise ConfigError(f, f"must be >= {minimum}, got {v}")
    return v


def _choice(spec: Mapping[str, Any], key: str, field: str, choices: tuple[str, ...], default: str) -> str:
    v = spec.get(key, default)
    if v not in choices:
        raise ConfigError(_join(field, key), f"must be one of {list(choices)}, got {v!r}")
    return v


def _bool(spec: Mapping[str, Any], key: str, field: str, default: bool) -> bool:
    v = spec.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(_join(field, key), f"must be true or false, got {v!r}")
    return v


def _check_mapping(spec: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(spec, Mapping):
        raise ConfigError(field or "model", f"must be a mapping, got {type(spec).__name__}")
    return spec


def _check_keys(spec: Mapping[str, Any], allowed: set[str], field: str, hint: str = "") -> None:
    for key in spec:
        if key not in allowed:
            raise ConfigError(_join(field, str(key)), f"unknown key; allowed: {sorted(allowed)}{hint}")


def _kind(spec: Mapping[str, Any], field: str) -> str:
    if "kind" not in spec:
        raise ConfigError(_join(field, "kind"), f"is required; one of {MODELS.names()}")
    kind = spec["kind"]
    if kind not in MODELS:
        raise ConfigError(_join(field, "kind"), f"unknown model kind {kind!r}; one of {MODELS.names()}")
    return kind


def _build_resnet(spec: Mapping[str, Any], field: str, *, encoder: bool) -> ResNet:
    if encoder:
        hint = " (set num_classes on the multimodal model, not on its encoders)" if "num_classes" in spec else ""
        _check_keys(spec, _RESNET_KEYS - {"num_classes"}, field, hint)
        if spec.get("kind", "resnet") != "resnet":
            raise ConfigError(_join(field, "kind"), f"encoders must be 'resnet', got {spec['kind']!r}")
        num_classes = 0
    else:
        _check_keys(spec, _RESNET_KEYS, field)
        num_classes = _int(spec, "num_classes", field, minimum=2)
    dropout = spec.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(_join(field, "dropout"), f"must be a number in [0, 1), got {dropout!r}")
    return ResNet(
        depth=_int(spec, "depth", field, default=18, choices=RESNET_DEPTHS),
        in_channels=_int(spec, "in_channels", field),
        num_classes=num_classes,
        width=_int(spec, "width", field, default=64),
        stem=_choice(spec, "stem", field, RESNET_STEMS, "standard"),
        zero_init_residual=_bool(spec, "zero_init_residual", field, False),
        dropout=float(dropout),
        norm=_choice(spec, "norm", field, RESNET_NORMS, "batch"),
    )


def build_model(spec: Mapping[str, Any], field: str = "model") -> nn.Module:
    """Build the model of ``spec["kind"]`` (``ResNet``, ``MultiModalNet``, ``SegNet``, ``CloudSegNet``, ...).

    ``field`` is the dotted path of ``spec`` in the run configuration (e.g. ``"models.target"``),
    used to name the offending field in ``ConfigError`` (e.g. ``"models.target.sar.depth"``).
    Raises ``ConfigError`` for an unknown kind or key, a missing required key, or a bad value.
    """
    spec = _check_mapping(spec, field)
    return MODELS.get(_kind(spec, field))(spec, field)


@register_model("resnet")
def _resnet(spec: Mapping[str, Any], field: str) -> ResNet:
    return _build_resnet(spec, field, encoder=False)


@register_model("multimodal", two_inputs=True)
def _multimodal(spec: Mapping[str, Any], field: str) -> MultiModalNet:
    _check_keys(spec, _MULTIMODAL_KEYS, field)
    encoders = {}
    for m in MODALITIES:
        f = _join(field, m)
        if m not in spec:
            raise ConfigError(f, "is required (a resnet encoder spec)")
        encoders[m] = _build_resnet(_check_mapping(spec[m], f), f, encoder=True)
    return MultiModalNet(
        encoders["optical"], encoders["sar"],
        num_classes=_int(spec, "num_classes", field, minimum=2),
        fusion=_choice(spec, "fusion", field, FUSIONS, "concat"),
        variational=_bool(spec, "variational", field, False),
    )


@register_model("early_fusion", two_inputs=True)
def _early_fusion(spec: Mapping[str, Any], field: str) -> "EarlyFusionNet":
    _check_keys(spec, {"kind", "num_classes", "encoder", *MODALITIES}, field)
    channels = {}
    for m in MODALITIES:
        f = _join(field, m)
        sub = _check_mapping(spec.get(m, {}), f)
        _check_keys(sub, {"in_channels"}, f)
        channels[m] = _int(sub, "in_channels", f)
    f = _join(field, "encoder")
    enc = dict(_check_mapping(spec.get("encoder", {}), f))
    _check_keys(enc, _RESNET_KEYS - {"kind", "num_classes", "in_channels"}, f,
                " (in_channels comes from optical + sar)")
    num_classes = _int(spec, "num_classes", field, minimum=2)
    net = _build_resnet({**enc, "in_channels": channels["optical"] + channels["sar"], "num_classes": num_classes},
                        f, encoder=False)
    return EarlyFusionNet(net)


class EarlyFusionNet(nn.Module):
    """One ResNet on the optical and SAR bands stacked (input-level fusion); logits out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, optical, sar):
        if sar.shape[-2:] != optical.shape[-2:]:
            sar = F.interpolate(sar, size=optical.shape[-2:], mode="bilinear", align_corners=False)
        return self.net(torch.cat([optical, sar], dim=1))


_SEG_ENCODER_KEYS = {"mit": {"type", "variant", "drop_path", "pretrained", "strict"},
                     "resnet": {"type", "depth", "width", "pretrained", "strict"}}
_SEG_COMMON_KEYS = {"kind", "num_classes", "encoder", "decoder_channels", "norm"}


def _seg_encoder(spec: Mapping[str, Any], field: str) -> tuple[dict[str, Any], str, bool]:
    """The encoder config of a segmentation spec, its ``pretrained`` URI ("" = none) and ``strict``."""
    f = _join(field, "encoder")
    enc = _check_mapping(spec.get("encoder", {}), f)
    kind = _choice(enc, "type", f, ENCODER_TYPES, "mit")
    _check_keys(enc, _SEG_ENCODER_KEYS[kind], f, f" (for type '{kind}')")
    if kind == "mit":
        variant = _choice(enc, "variant", f, tuple(MIT_VARIANTS), "tiny")
        dp = enc.get("drop_path", MIT_VARIANTS[variant].drop_path)
        if isinstance(dp, bool) or not isinstance(dp, (int, float)) or not 0.0 <= dp < 1.0:
            raise ConfigError(_join(f, "drop_path"), f"must be a number in [0, 1), got {dp!r}")
        cfg: dict[str, Any] = {"type": "mit", "variant": variant, "drop_path": float(dp)}
    else:
        cfg = {"type": "resnet", "depth": _int(enc, "depth", f, default=18, choices=RESNET_DEPTHS),
               "width": _int(enc, "width", f, default=64)}
    pretrained = enc.get("pretrained", "")
    if pretrained is None:
        pretrained = ""
    if not isinstance(pretrained, str):
        raise ConfigError(_join(f, "pretrained"),
                          f"must be a path or URI of a weights file (or empty), got {pretrained!r}")
    return cfg, pretrained, _bool(enc, "strict", f, True)


def _decoder_channels(spec: Mapping[str, Any], field: str, encoder: Mapping[str, Any]) -> tuple[int, ...]:
    if "decoder_channels" not in spec:
        return default_decoder_channels(encoder)
    v = spec["decoder_channels"]
    if not isinstance(v, (list, tuple)) or len(v) != 5 or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in v):
        raise ConfigError(_join(field, "decoder_channels"),
                          f"must be a list of 5 positive integers (3 blocks with skips down to stride 4, 2 up to "
                          f"the input resolution), got {v!r}")
    return tuple(v)


def _modality_channels(spec: Mapping[str, Any], field: str) -> dict[str, int]:
    channels = {}
    for m in MODALITIES:
        f = _join(field, m)
        if m not in spec:
            raise ConfigError(f, "is required (a mapping with in_channels)")
        sub = _check_mapping(spec[m], f)
        _check_keys(sub, {"in_channels"}, f)
        channels[m] = _int(sub, "in_channels", f)
    return channels


def _with_pretrained(model: nn.Module, uri: str, strict: bool, field: str) -> nn.Module:
    if uri:
        model.load_pretrained(uri, strict=strict, field=_join(field, "encoder.pretrained"))
    return model


@register_model("segnet")
def _segnet(spec: Mapping[str, Any], field: str) -> SegNet:
    _check_keys(spec, _SEG_COMMON_KEYS | {"in_channels"}, field)
    enc, pretrained, strict = _seg_encoder(spec, field)
    model = SegNet(_int(spec, "in_channels", field), _int(spec, "num_classes", field, minimum=2), enc,
                   _decoder_channels(spec, field, enc), norm=_choice(spec, "norm", field, RESNET_NORMS, "batch"))
    return _with_pretrained(model, pretrained, strict, field)


@register_model("early_fusion_seg", two_inputs=True)
def _early_fusion_seg(spec: Mapping[str, Any], field: str) -> EarlyFusionSegNet:
    _check_keys(spec, _SEG_COMMON_KEYS | set(MODALITIES), field)
    ch = _modality_channels(spec, field)
    enc, pretrained, strict = _seg_encoder(spec, field)
    model = EarlyFusionSegNet(ch["optical"], ch["sar"], _int(spec, "num_classes", field, minimum=2), enc,
                              _decoder_channels(spec, field, enc),
                              norm=_choice(spec, "norm", field, RESNET_NORMS, "batch"))
    return _with_pretrained(model, pretrained, strict, field)


@register_model("cloudseg", two_inputs=True)
def _cloudseg(spec: Mapping[str, Any], field: str) -> CloudSegNet:
    _check_keys(spec, _SEG_COMMON_KEYS | set(MODALITIES) | {"student"}, field)
    ch = _modality_channels(spec, field)
    enc, pretrained, strict = _seg_encoder(spec, field)
    model = CloudSegNet(ch["optical"], ch["sar"], _int(spec, "num_classes", field, minimum=2), enc,
                        _decoder_channels(spec, field, enc), student=_bool(spec, "student", field, False),
                        norm=_choice(spec, "norm", field, RESNET_NORMS, "batch"))
    return _with_pretrained(model, pretrained, strict, field)


def model_spec_in_channels(spec: Mapping[str, Any], field: str = "model") -> dict[str, int]:
    """Input band counts a spec expects: ``{"optical": n, "sar": m}`` for a two-input spec (multimodal,
    early fusion), ``{"input": n}`` for a single-input resnet. Validates only what it reads."""
    spec = _check_mapping(spec, field)
    if _kind(spec, field) not in TWO_INPUT_KINDS:
        return {"input": _int(spec, "in_channels", field)}
    out = {}
    for m in MODALITIES:
        f = _join(field, m)
        if m not in spec:
            raise ConfigError(f, "is required (a resnet encoder spec)")
        out[m] = _int(_check_mapping(spec[m], f), "in_channels", f)
    return out


def check_model_inputs(spec: Mapping[str, Any], bands: Mapping[str, int], field: str = "model") -> None:
    """Raise ``ConfigError`` naming ``<field>[.<modality>].in_channels`` if the data's band counts
    (``bands``: ``{"optical": 10, "sar": 2}``, or ``{"input": 10}`` for a resnet) do not match."""
    for key, n in model_spec_in_channels(spec, field).items():
        f = _join(field, "in_channels") if key == "input" else _join(_join(field, key), "in_channels")
        if key not in bands:
            raise ConfigError(f, f"the data provides no '{key}' input (has {sorted(bands)})")
        if bands[key] != n:
            raise ConfigError(f, f"is {n} but the data has {bands[key]} {key} bands")
