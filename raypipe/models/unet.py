"""U-Net decoder, encoders for it, and single-input / early-fusion segmentation networks.

Ronneberger et al., "U-Net", MICCAI 2015, in the form of segmentation_models_pytorch's ``Unet``
(which CloudSeg uses) for an encoder with 4 feature maps at strides 4, 8, 16, 32:

* :class:`UNetDecoder`: from the deepest feature, three blocks (nearest upsampling to the skip's
  size, concatenate the skip, two conv3x3-norm-ReLU) down to stride 4, then two blocks without a
  skip (nearest 2x, two conv3x3-norm-ReLU) up to the input resolution. ``decoder_channels`` are
  the 5 blocks' widths: (256, 128, 64, 32, 16) for the published models, (32, 16, 16, 16, 16) for
  the tiny encoder (``default_decoder_channels``). The output is exactly ``(B, decoder_channels[-1],
  H, W)`` for any input size (the upsampling targets sizes, not a scale factor).
* ``norm``: ``"batch"`` (BatchNorm, converted to SyncBatchNorm under multi-GPU DDP) or ``"group"``
  (GroupNorm: results do not depend on how a batch is split across workers).
* Encoders (:func:`build_encoder`): ``{"type": "mit", "variant": "tiny"|"b0".."b5", "drop_path": ...}``
  (:class:`~raypipe.models.mit.MiT`) or ``{"type": "resnet", "depth": 18, "width": 64}``
  (:class:`ResNetEncoder`, raypipe's ResNet with the standard stem, stages at strides 4/8/16/32).

Networks, both returning :class:`SegOutput` (``logits`` at the input resolution: a task whose labels
lie on a coarser grid resizes them; ``hint`` = the decoder's output features):

* :class:`SegNet`: one encoder + U-Net decoder + conv3x3 head, ``forward(x)``: the optical-only and
  SAR-only references.
* :class:`EarlyFusionSegNet`: SAR nearest-upsampled to the optical grid (as CloudSeg's data loader
  does), concatenated with the optical bands, one SegNet; ``forward(optical, sar)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raypipe.models.mit import MIT_VARIANTS, MiT, StagedEncoder, load_pretrained
from raypipe.models.resnet import RESNET_DEPTHS, RESNET_NORMS, ResNet, make_norm

__all__ = ["SegOutput", "UNetDecoder", "ResNetEncoder", "SegNet", "EarlyFusionSegNet", "build_encoder",
           "default_decoder_channels", "ENCODER_TYPES", "PUBLISHED_DECODER_CHANNELS", "TINY_DECODER_CHANNELS"]

ENCODER_TYPES: tuple[str, ...] = ("mit", "resnet")
PUBLISHED_DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)
TINY_DECODER_CHANNELS: tuple[int, ...] = (32, 16, 16, 16, 16)
DEFAULT_ENCODER: dict[str, Any] = {"type": "mit", "variant": "tiny"}


@dataclass
class SegOutput:
    """Outputs of the segmentation networks.

    ``logits``: ``(B, num_classes, H, W)`` at the (optical) input resolution.
    ``hint``: the decoder features that fed the head, ``(B, decoder_channels[-1], H, W)`` (CloudSeg
    distils the student's onto the teacher's on cloud-free pixels).
    ``restored``: CloudSeg student only, the predicted normalised cloud-free optical image
    ``(B, optical_bands, H, W)``; ``None`` otherwise.
    """

    logits: torch.Tensor
    hint: torch.Tensor | None = None
    restored: torch.Tensor | None = None


def default_decoder_channels(encoder: Mapping[str, Any] | None) -> tuple[int, ...]:
    """(32, 16, 16, 16, 16) for the tiny MiT, the published (256, 128, 64, 32, 16) otherwise."""
    enc = dict(DEFAULT_ENCODER if encoder is None else encoder)
    if enc.get("type", "mit") == "mit" and enc.get("variant", "tiny") == "tiny":
        return TINY_DECODER_CHANNELS
    return PUBLISHED_DECODER_CHANNELS


class ResNetEncoder(StagedEncoder):
    """raypipe's :class:`~raypipe.models.resnet.ResNet` (standard stem) as a 4-stage encoder.

    Stage 1 is the stem (7x7/2 conv + max-pool) and ``layer1`` (stride 4); stages 2..4 are
    ``layer2..4`` (strides 8, 16, 32). ``widths`` = ``width * (1, 2, 4, 8) * expansion``. Parameter
    names are the ResNet's (``stem.0.weight``, ``layer1.0.conv1.weight``, ...), without ``fc``.
    ``first_stage=2`` keeps ``layer2..4`` only (CloudSeg's cross stream).
    """

    def __init__(self, in_channels: int = 3, depth: int = 18, width: int = 64, norm: str = "batch",
                 first_stage: int = 1):
        super().__init__()
        if first_stage not in (1, 2, 3, 4):
            raise ValueError(f"first_stage must be 1..4, got {first_stage!r}")
        net = ResNet(depth=depth, in_channels=max(in_channels, 1), num_classes=0, width=width,
                     stem="standard", norm=norm)
        block, _ = RESNET_DEPTHS[depth]
        self.depth, self.width, self.in_channels, self.first_stage = depth, width, in_channels, first_stage
        self.widths = tuple(width * 2**i * block.expansion for i in range(4))
        self.stage_ids = tuple(range(first_stage, 5))
        if first_stage == 1:
            self.stem = net.stem
        for i in self.stage_ids:
            setattr(self, f"layer{i}", getattr(net, f"layer{i}"))

    @property
    def pretrained_first_conv(self) -> str | None:
        return "stem.0.weight" if self.first_stage == 1 else None

    @property
    def pretrained_ignored_prefixes(self) -> tuple[str, ...]:
        return ("fc.",) + (("stem.",) if self.first_stage > 1 else ()) + tuple(
            f"layer{i}." for i in range(1, self.first_stage))

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i not in self.stage_ids:
            raise ValueError(f"this encoder holds stages {self.stage_ids}, not {i}")
        if i == 1:
            x = self.stem(x)
        return getattr(self, f"layer{i}")(x)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}, widths={self.widths}, first_stage={self.first_stage}"


def build_encoder(in_channels: int, encoder: Mapping[str, Any] | None = None, norm: str = "batch",
                  first_stage: int = 1) -> nn.Module:
    """An encoder from ``{"type": "mit", "variant", "drop_path"}`` or ``{"type": "resnet", "depth",
    "width"}`` (``pretrained``/``strict`` keys are read by the networks' ``load_pretrained``).
    ``norm`` applies to the ResNet (MiT uses LayerNorm only). Raises ``ValueError`` for bad values
    (the model factory validates specs first and names the field)."""
    enc = dict(DEFAULT_ENCODER if encoder is None else encoder)
    kind = enc.get("type", "mit")
    if kind == "mit":
        variant = enc.get("variant", "tiny")
        if variant not in MIT_VARIANTS:
            raise ValueError(f"MiT variant must be one of {list(MIT_VARIANTS)}, got {variant!r}")
        return MiT(in_channels, variant, drop_path=enc.get("drop_path"), first_stage=first_stage)
    if kind == "resnet":
        return ResNetEncoder(in_channels, depth=enc.get("depth", 18), width=enc.get("width", 64), norm=norm,
                             first_stage=first_stage)
    raise ValueError(f"encoder type must be one of {ENCODER_TYPES}, got {kind!r}")


def _conv_norm_relu(in_ch: int, out_ch: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                         make_norm(norm, out_ch), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Nearest upsampling to ``size``, concatenate ``skip`` (if any), two conv3x3-norm-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str = "batch"):
        super().__init__()
        self.conv1 = _conv_norm_relu(in_ch + skip_ch, out_ch, norm)
        self.conv2 = _conv_norm_relu(out_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, size: Sequence[int], skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=tuple(size), mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """U-Net decoder over 4 encoder features (strides 4, 8, 16, 32) to the input resolution.

    Args:
        encoder_widths: channels of the 4 features, shallow to deep.
        decoder_channels: the 5 blocks' output channels (3 with skips, 2 without).
        norm: ``"batch"`` or ``"group"``.

    ``forward(features, size)`` -> ``(B, decoder_channels[-1], *size)``.
    """

    def __init__(self, encoder_widths: Sequence[int], decoder_channels: Sequence[int] = PUBLISHED_DECODER_CHANNELS,
                 norm: str = "batch"):
        super().__init__()
        widths, dec = tuple(encoder_widths), tuple(decoder_channels)
        if len(widths) != 4:
            raise ValueError(f"encoder_widths must have 4 entries, got {widths}")
        if len(dec) != 5 or any(not isinstance(c, int) or c < 1 for c in dec):
            raise ValueError(f"decoder_channels must be 5 positive integers, got {dec}")
        if norm not in RESNET_NORMS:
            raise ValueError(f"norm must be one of {RESNET_NORMS}, got {norm!r}")
        self.decoder_channels = dec
        self.out_channels = dec[-1]
        skips = (widths[2], widths[1], widths[0], 0, 0)
        ins = (widths[3],) + dec[:-1]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o, norm) for i, s, o in zip(ins, skips, dec))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        f4, f8, f16, f32 = features
        h, w = int(size[0]), int(size[1])
        x = self.blocks[0](f32, f16.shape[-2:], f16)
        x = self.blocks[1](x, f8.shape[-2:], f8)
        x = self.blocks[2](x, f4.shape[-2:], f4)
        x = self.blocks[3](x, ((h + 1) // 2, (w + 1) // 2))
        return self.blocks[4](x, (h, w))


def _head(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def _check_norm(norm: str) -> None:
    if norm not in RESNET_NORMS:
        raise ValueError(f"norm must be one of {RESNET_NORMS}, got {norm!r}")


class SegNet(nn.Module):
    """One encoder + U-Net decoder + conv3x3 head: single-input segmentation.

    Args:
        in_channels: input bands.
        num_classes: output classes.
        encoder: encoder spec (see :func:`build_encoder`); default the tiny MiT.
        decoder_channels: 5 decoder widths; default :func:`default_decoder_channels`.
        norm: decoder (and ResNet encoder) normalisation, ``"batch"`` or ``"group"``.

    ``forward(x)`` -> :class:`SegOutput` (``logits`` ``(B, num_classes, H, W)``, ``hint`` the
    decoder features).
    """

    def __init__(self, in_channels: int, num_classes: int, encoder: Mapping[str, Any] | None = None,
                 decoder_channels: Sequence[int] | None = None, norm: str = "batch"):
        super().__init__()
        _check_norm(norm)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        dec = tuple(decoder_channels) if decoder_channels is not None else default_decoder_channels(encoder)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.encoder = build_encoder(in_channels, encoder, norm)
        self.decoder = UNetDecoder(self.encoder.widths, dec, norm)
        self.head = _head(dec[-1], num_classes)

    def load_pretrained(self, uri: str, *, strict: bool = True, field: str = "encoder.pretrained") -> None:
        """Pretrained encoder weights (:func:`raypipe.models.mit.load_pretrained`)."""
        load_pretrained(self.encoder, uri, strict=strict, field=field)

    def forward(self, x: torch.Tensor) -> SegOutput:
        hint = self.decoder(self.encoder(x), x.shape[-2:])
        return SegOutput(logits=self.head(hint), hint=hint)


class EarlyFusionSegNet(nn.Module):
    """Input-level fusion: SAR nearest-upsampled to the optical grid, bands stacked, one :class:`SegNet`.

    ``forward(optical, sar)`` -> :class:`SegOutput` at the optical resolution.
    """

    def __init__(self, optical_ch: int, sar_ch: int, num_classes: int, encoder: Mapping[str, Any] | None = None,
                 decoder_channels: Sequence[int] | None = None, norm: str = "batch"):
        super().__init__()
        self.optical_ch, self.sar_ch = optical_ch, sar_ch
        self.net = SegNet(optical_ch + sar_ch, num_classes, encoder, decoder_channels, norm)

    def load_pretrained(self, uri: str, *, strict: bool = True, field: str = "encoder.pretrained") -> None:
        self.net.load_pretrained(uri, strict=strict, field=field)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> SegOutput:
        if sar.shape[-2:] != optical.shape[-2:]:
            sar = F.interpolate(sar, size=optical.shape[-2:], mode="nearest")
        return self.net(torch.cat([optical, sar], dim=1))
