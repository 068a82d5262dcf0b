"""CloudSeg: a three-stream optical + SAR segmentation network (Xu et al., ISPRS J. 2024).

Three encoders of the same type: optical, SAR, and a cross-modal stream (MiT-B4 in the paper;
any MiT variant or raypipe's ResNet here). The SAR input is nearest-upsampled to the optical grid
first (as CloudSeg's data loader does with the 10 m Sentinel-1 tiles under 3 m PlanetScope tiles).
After each encoder stage a :class:`FusionBlock` (C = that stage's width) mixes the streams:

1. multi-scale context per stream: ``m = ReLU(conv1x1_{3C->C}(cat[x, up(maxpool2(x)), up(maxpool4(x))]))``
   (nearest upsampling back to x's size; the pools round down as in the public code, and round up
   on maps smaller than their window, so 1x1 and odd maps work);
2. student only, a spatial gate on the optical context (CBAM-style):
   ``a = sigmoid(norm(conv7x7_{2->1}(cat[max_c, mean_c](m_opt - m_sar))))``, ``a * m_opt`` goes into
   the squeeze-excitation below (the distribution gates of step 4 use the ungated ``m_opt``, as
   in the public code);
3. squeeze-excitation over ``cat[m_opt, m_sar, m_cross]`` (global average pool, FC 3C->3C/16,
   ReLU, FC, sigmoid; no biases), rescaled and the three C-chunks summed: the new cross feature.
   Stage 1 has no cross stream yet: the SE runs over ``cat[m_opt, m_sar]`` (2C) and the two chunks
   are summed, which creates the cross stream;
4. for k in (optical, SAR): ``g_k = sigmoid(conv3x3(cross - m_k))``, ``x_k <- x_k + (cross - m_k) * g_k``,
   the input of that stream's next stage.

The cross stream's encoder holds stages 2..4 only: its stage ``i`` input is the cross feature of
fusion block ``i-1`` (widths match the modality streams'). A U-Net decoder on the 4 cross features
gives ``hint`` (the features CloudSeg distils) and a conv3x3 head the ``logits`` at the optical input
resolution (a task resizes them to its label grid, e.g. 160 px at 3 m -> 48 px at 10 m).

Student only (``student=True``, cloudy optical input): an optical-stream U-Net decoder on the 4 fused
optical features and a cloud-removal head conv3x3(decoder_channels[-1] -> 64) -> conv3x3(64 ->
optical bands), no activation, predicting the normalised cloud-free optical image (``restored``).

Unused parameters: the public code builds modules it never uses (a stage-1 cross context, the
stage-4 distribution gates whose outputs feed nothing, per-stream decoders and heads). Here the last
fusion block updates only the streams whose update is consumed (the optical stream in the student,
for its decoder; none in the teacher), and no unused module is built: every parameter gets a
gradient from ``logits`` (teacher) or ``logits`` + ``restored`` (student), so DDP needs no
``find_unused_parameters``. Outputs are identical to the public design.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raypipe.models.mit import load_pretrained
from raypipe.models.resnet import RESNET_NORMS, make_norm
from raypipe.models.unet import SegOutput, UNetDecoder, build_encoder, default_decoder_channels

__all__ = ["CloudSegNet", "FusionBlock", "MultiScaleContext", "SqueezeExcite", "SpatialGate", "SegOutput",
           "RESTORE_HIDDEN"]

RESTORE_HIDDEN = 64  # hidden channels of the cloud-removal head (CloudSeg: 16 -> 64 -> 4)
STREAMS: tuple[str, ...] = ("optical", "sar")


class MultiScaleContext(nn.Module):
    """``ReLU(conv1x1_{3C->C}(cat[x, up(maxpool2(x)), up(maxpool4(x))]))``, nearest up to x's size."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(3 * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        p2 = F.interpolate(_max_pool(x, 2), size=size, mode="nearest")
        p4 = F.interpolate(_max_pool(x, 4), size=size, mode="nearest")
        return F.relu(self.conv(torch.cat([x, p2, p4], dim=1)))


def _max_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k stride-k max-pool, rounding down as the public code does (identical results wherever it
    runs); a map smaller than the window rounds up instead (a 1x1 or 3x3 map at stride 32 of a small crop)."""
    return F.max_pool2d(x, k, k, ceil_mode=min(x.shape[-2:]) < k)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation over ``n`` parts of C channels, the rescaled parts summed: ``(B, C, H, W)``."""

    def __init__(self, channels: int, parts: int, reduction: int = 16):
        super().__init__()
        n = channels * parts
        self.parts = parts
        self.fc = nn.Sequential(nn.Linear(n, max(1, n // reduction), bias=False), nn.ReLU(inplace=True),
                                nn.Linear(max(1, n // reduction), n, bias=False), nn.Sigmoid())

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != self.parts:
            raise ValueError(f"expected {self.parts} inputs, got {len(xs)}")
        x = torch.cat(xs, dim=1)
        w = self.fc(x.mean(dim=(2, 3)))[:, :, None, None]
        return sum((x * w).chunk(self.parts, dim=1))


class SpatialGate(nn.Module):
    """``sigmoid(norm(conv7x7_{2->1}(cat[max_c(d), mean_c(d)])))``: a ``(B, 1, H, W)`` gate in (0, 1)."""

    def __init__(self, norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)
        self.norm = make_norm(norm, 1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([d.amax(dim=1, keepdim=True), d.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.norm(self.conv(pooled)))


class FusionBlock(nn.Module):
    """CloudSeg's fusion after one encoder stage (see the module docstring).

    Args:
        channels: the stage's width C.
        first: stage 1 (no cross stream yet: SE over the optical and SAR contexts creates it).
        spatial_gate: the student's gate on the optical context.
        update: the streams whose features are updated and returned (the others are returned as
            given); the last block updates only what a decoder reads.
        norm: normalisation of the spatial gate.

    ``forward(optical, sar, cross=None)`` -> ``(optical', sar', cross')``, all ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, first: bool = False, spatial_gate: bool = False,
                 update: Sequence[str] = STREAMS, norm: str = "batch"):
        super().__init__()
        if any(u not in STREAMS for u in update):
            raise ValueError(f"update must name streams of {STREAMS}, got {tuple(update)}")
        self.channels, self.first, self.update = channels, first, tuple(update)
        self.context = nn.ModuleDict({s: MultiScaleContext(channels) for s in STREAMS + (() if first else ("cross",))})
        self.spatial_gate = SpatialGate(norm) if spatial_gate else None
        self.se = SqueezeExcite(channels, 2 if first else 3)
        self.gate = nn.ModuleDict({s: nn.Conv2d(channels, channels, kernel_size=3, padding=1) for s in self.update})

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, cross: torch.Tensor | None = None):
        if (cross is None) != self.first:
            raise ValueError("the first fusion block takes no cross feature, the others need one")
        m = {"optical": self.context["optical"](optical), "sar": self.context["sar"](sar)}
        m_opt = m["optical"]
        if self.spatial_gate is not None:
            m_opt = self.spatial_gate(m["optical"] - m["sar"]) * m_opt
        if self.first:
            new_cross = self.se(m_opt, m["sar"])
        else:
            new_cross = self.se(m_opt, m["sar"], self.context["cross"](cross))
        x = {"optical": optical, "sar": sar}
        for s in self.update:
            diff = new_cross - m[s]
            x[s] = x[s] + diff * torch.sigmoid(self.gate[s](diff))
        return x["optical"], x["sar"], new_cross

    def extra_repr(self) -> str:
        return f"channels={self.channels}, first={self.first}, update={self.update}"


class CloudSegNet(nn.Module):
    """CloudSeg teacher (``student=False``) or student (``student=True``).

    Args:
        optical_ch, sar_ch: input bands.
        num_classes: output classes.
        encoder: encoder spec for all three streams (see :func:`raypipe.models.unet.build_encoder`);
            default the tiny MiT. CloudSeg: ``{"type": "mit", "variant": "b4"}``.
        decoder_channels: 5 U-Net decoder widths; default ``default_decoder_channels(encoder)``.
        student: add the optical spatial gates, the optical decoder and the cloud-removal head.
        norm: ``"batch"`` or ``"group"`` for decoders, spatial gates and ResNet encoders.

    ``forward(optical, sar)`` -> :class:`SegOutput`: ``logits`` ``(B, num_classes, H, W)`` at the
    optical resolution, ``hint`` the cross decoder's features ``(B, decoder_channels[-1], H, W)``,
    ``restored`` ``(B, optical_ch, H, W)`` for the student, else ``None``. SAR on a coarser grid is
    nearest-upsampled to the optical one.
    """

    def __init__(self, optical_ch: int, sar_ch: int, num_classes: int, encoder: Mapping[str, Any] | None = None,
                 decoder_channels: Sequence[int] | None = None, student: bool = False, norm: str = "batch"):
        super().__init__()
        if norm not in RESNET_NORMS:
            raise ValueError(f"norm must be one of {RESNET_NORMS}, got {norm!r}")
        if num_classes < 1 or optical_ch < 1 or sar_ch < 1:
            raise ValueError("optical_ch, sar_ch and num_classes must be >= 1")
        dec = tuple(decoder_channels) if decoder_channels is not None else default_decoder_channels(encoder)
        self.optical_ch, self.sar_ch, self.num_classes, self.student = optical_ch, sar_ch, num_classes, student
        self.optical_encoder = build_encoder(optical_ch, encoder, norm)
        self.sar_encoder = build_encoder(sar_ch, encoder, norm)
        self.cross_encoder = build_encoder(0, encoder, norm, first_stage=2)
        widths = tuple(self.optical_encoder.widths)
        self.widths = widths
        last_update = ("optical",) if student else ()
        self.fusions = nn.ModuleList(
            FusionBlock(w, first=(i == 0), spatial_gate=student, update=STREAMS if i < 3 else last_update, norm=norm)
            for i, w in enumerate(widths))
        self.decoder = UNetDecoder(widths, dec, norm)
        self.head = nn.Conv2d(dec[-1], num_classes, kernel_size=3, padding=1)
        if student:
            self.optical_decoder = UNetDecoder(widths, dec, norm)
            self.restore_head = nn.Sequential(nn.Conv2d(dec[-1], RESTORE_HIDDEN, kernel_size=3, padding=1),
                                              nn.Conv2d(RESTORE_HIDDEN, optical_ch, kernel_size=3, padding=1))
        else:
            self.optical_decoder = None
            self.restore_head = None

    def encoders(self) -> dict[str, nn.Module]:
        return {"optical": self.optical_encoder, "sar": self.sar_encoder, "cross": self.cross_encoder}

    def load_pretrained(self, uri: str, *, strict: bool = True, field: str = "encoder.pretrained") -> None:
        """Load one encoder weights file into all three streams (the cross stream takes stages 2..4;
        first convolutions are adapted to each stream's band count)."""
        for enc in self.encoders().values():
            load_pretrained(enc, uri, strict=strict, field=field)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> SegOutput:
        if sar.shape[-2:] != optical.shape[-2:]:
            sar = F.interpolate(sar, size=optical.shape[-2:], mode="nearest")
        size = optical.shape[-2:]
        x_opt, x_sar, cross = optical, sar, None
        opt_feats, cross_feats = [], []
        for i, fusion in enumerate(self.fusions, start=1):
            x_opt = self.optical_encoder.forward_stage(i, x_opt)
            x_sar = self.sar_encoder.forward_stage(i, x_sar)
            if cross is not None:
                cross = self.cross_encoder.forward_stage(i, cross)
            x_opt, x_sar, cross = fusion(x_opt, x_sar, cross)
            opt_feats.append(x_opt)
            cross_feats.append(cross)
        hint = self.decoder(cross_feats, size)
        restored = None
        if self.student:
            restored = self.restore_head(self.optical_decoder(opt_feats, size))
        return SegOutput(logits=self.head(hint), hint=hint, restored=restored)

    def extra_repr(self) -> str:
        return (f"optical_ch={self.optical_ch}, sar_ch={self.sar_ch}, num_classes={self.num_classes}, "
                f"student={self.student}, widths={self.widths}")
