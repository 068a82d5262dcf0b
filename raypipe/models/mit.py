"""Mix Transformer (MiT) encoder of SegFormer, in plain PyTorch, for multi-band tiles.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021. CloudSeg (Xu et al., ISPRS 2024) uses MiT-B4 for its optical, SAR and cross streams.

Four stages; stage ``i`` is an overlapping patch embedding (7x7 stride 4 padding 3 for stage 1,
3x3 stride 2 padding 1 after, each followed by LayerNorm), ``depths[i]`` transformer blocks and a
LayerNorm. A block is ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MixFFN(LN(x)))``:

* efficient self-attention: keys and values come from the token map reduced by a ``sr x sr``
  stride-``sr`` convolution + LayerNorm (when ``sr > 1``), so stage 1 attends to 1/64 of its tokens;
* Mix-FFN: fc -> depthwise 3x3 convolution -> GELU -> fc (the depthwise conv stands in for
  positional encodings, so any input size works);
* stochastic depth: the drop-path rate grows linearly from 0 to ``drop_path`` over all blocks.

``forward(x)`` returns the 4 feature maps ``(B, widths[i], ceil(H/s), ceil(W/s))`` for strides
s = 4, 8, 16, 32. Any input size works, also sizes not divisible by 32 (30, 60, 100, 160 px): the
strided patch-embedding convolutions round up, and the spatial-reduction convolution zero-pads the
token map on the bottom/right to a multiple of ``sr`` (identical to SegFormer whenever the map is a
multiple of ``sr``, as at 160 px or 512 px; on other sizes SegFormer drops the remainder rows and
columns from the keys and values, and fails on maps smaller than ``sr``).

Variants (``MIT_VARIANTS``): the published b0..b5 (heads 1/2/5/8, spatial-reduction ratios
8/4/2/1, MLP ratio 4 in every stage, as in SegFormer), and raypipe's own ``tiny`` for CPU tests and
demos (widths 8/16/32/64, depths 1/1/1/1, heads 1/1/2/4, SR 8/4/2/1, MLP ratio 2), not a published
model and without pretrained weights: 86 k parameters, so that CloudSeg's three tiny streams with
their fusion blocks and decoders stay near 0.4 M (teacher) / 0.5 M (student) parameters and a
training step of 8 tiles of 60 px takes about 0.1 s on 2 CPU cores (widths 16/32/64/128 would give
1.4 M / 1.6 M).

===== ====================== ============
name  widths                 depths
===== ====================== ============
tiny  8 / 16 / 32 / 64       1 / 1 / 1 / 1
b0    32 / 64 / 160 / 256    2 / 2 / 2 / 2
b1    64 / 128 / 320 / 512   2 / 2 / 2 / 2
b2    64 / 128 / 320 / 512   3 / 4 / 6 / 3
b3    64 / 128 / 320 / 512   3 / 4 / 18 / 3
b4    64 / 128 / 320 / 512   3 / 8 / 27 / 3
b5    64 / 128 / 320 / 512   3 / 6 / 40 / 3
===== ====================== ============

Default drop-path: 0.1 for b0..b5 (SegFormer, CloudSeg), 0.0 for ``tiny`` (one block per stage:
dropping it would drop a quarter of the encoder).

Parameter names follow SegFormer's reference implementation (``patch_embed1.proj.weight``,
``block1.0.attn.q.weight``, ``block1.0.mlp.dwconv.dwconv.weight``, ``norm1.weight``, ...), so the
published ImageNet ``mit_b*.pth`` files load as they are (their ``head.*`` classifier is ignored).

Pretrained weights: :func:`load_pretrained` reads a local path or ``s3://`` URI (weights only,
``torch.load(weights_only=True)``), a plain state dict or ``{"state_dict": ...}``. When the file's
first convolution has 3 input channels (RGB) and the encoder ``C != 3``, the RGB filters are
repeated cyclically over the C bands and scaled by 3/C (CloudSeg), which keeps the first layer's
response to a band-constant image at the RGB model's scale.

``first_stage=2`` builds only stages 2..4 (CloudSeg's cross stream, fed by the stage-1 fusion
output of ``widths[0]`` channels); ``forward_stage(i, x)`` runs one stage on a ``(B, C, H, W)`` map.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from raypipe.errors import ConfigError

__all__ = ["MiT", "MiTVariant", "MIT_VARIANTS", "DropPath", "load_pretrained", "adapt_first_conv"]


@dataclass(frozen=True)
class MiTVariant:
    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    sr_ratios: tuple[int, int, int, int]
    mlp_ratio: int
    drop_path: float  # the default maximum drop-path rate


_B_HEADS = (1, 2, 5, 8)
_SR = (8, 4, 2, 1)
_WIDE = (64, 128, 320, 512)
MIT_VARIANTS: dict[str, MiTVariant] = {
    "tiny": MiTVariant((8, 16, 32, 64), (1, 1, 1, 1), (1, 1, 2, 4), _SR, 2, 0.0),
    "b0": MiTVariant((32, 64, 160, 256), (2, 2, 2, 2), _B_HEADS, _SR, 4, 0.1),
    "b1": MiTVariant(_WIDE, (2, 2, 2, 2), _B_HEADS, _SR, 4, 0.1),
    "b2": MiTVariant(_WIDE, (3, 4, 6, 3), _B_HEADS, _SR, 4, 0.1),
    "b3": MiTVariant(_WIDE, (3, 4, 18, 3), _B_HEADS, _SR, 4, 0.1),
    "b4": MiTVariant(_WIDE, (3, 8, 27, 3), _B_HEADS, _SR, 4, 0.1),
    "b5": MiTVariant(_WIDE, (3, 6, 40, 3), _B_HEADS, _SR, 4, 0.1),
}


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, zero a sample's residual branch with
    probability ``p`` and scale the kept ones by ``1 / (1 - p)``; the identity at evaluation."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class OverlapPatchEmbed(nn.Module):
    """Strided convolution (kernel > stride, so patches overlap) + LayerNorm; ``(B,C,H,W)`` ->
    tokens ``(B, H'W', D)`` with ``H' = ceil(H / stride)``."""

    def __init__(self, in_ch: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from the ``sr``-times reduced token map."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.sr_ratio = sr
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr, stride=sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, n, self.heads, d).transpose(1, 2)
        kv_in = x
        if self.sr_ratio > 1:
            t = x.transpose(1, 2).reshape(b, c, h, w)
            ph, pw = (-h) % self.sr_ratio, (-w) % self.sr_ratio
            if ph or pw:  # round up: every token is seen, and maps smaller than sr still work
                t = F.pad(t, (0, pw, 0, ph))
            kv_in = self.norm(self.sr(t).flatten(2).transpose(1, 2))
        kv = self.kv(kv_in).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w))
        return x.flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """fc -> depthwise 3x3 conv -> GELU -> fc."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class StagedEncoder(nn.Module):
    """An encoder of numbered stages (``stage_ids``, ``forward_stage(i, x)``); ``forward(x)`` runs the
    stages it holds in order and returns their feature maps (4 for a full encoder, strides 4, 8, 16, 32)."""

    stage_ids: tuple[int, ...]

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i in self.stage_ids:
            x = self.forward_stage(i, x)
            feats.append(x)
        return feats


class MiT(StagedEncoder):
    """Mix Transformer encoder.

    Args:
        in_channels: input bands (ignored when ``first_stage > 1``).
        variant: a key of ``MIT_VARIANTS`` (``"tiny"``, ``"b0"`` .. ``"b5"``).
        drop_path: maximum stochastic-depth rate (reached by the last block); ``None`` takes the
            variant's default (0.1 for b0..b5, 0.0 for tiny).
        first_stage: 1 builds the whole encoder; 2 builds stages 2..4 only, whose input is a map of
            ``widths[0]`` channels at stride 4 (CloudSeg's cross stream).

    Attributes:
        widths, depths, heads, sr_ratios: per stage (always 4 entries, also with ``first_stage=2``).
        stage_ids: the stages this module holds.
    """

    def __init__(self, in_channels: int = 3, variant: str = "b0", drop_path: float | None = None,
                 first_stage: int = 1):
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ValueError(f"variant must be one of {list(MIT_VARIANTS)}, got {variant!r}")
        if first_stage not in (1, 2, 3, 4):
            raise ValueError(f"first_stage must be 1..4, got {first_stage!r}")
        if first_stage == 1 and in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        v = MIT_VARIANTS[variant]
        drop_path = v.drop_path if drop_path is None else float(drop_path)
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")
        self.variant = variant
        self.in_channels = in_channels
        self.widths, self.depths, self.heads, self.sr_ratios = v.widths, v.depths, v.heads, v.sr_ratios
        self.mlp_ratio = v.mlp_ratio
        self.drop_path = drop_path
        self.first_stage = first_stage
        self.stage_ids = tuple(range(first_stage, 5))
        n = sum(v.depths)
        rates = [drop_path * j / (n - 1) if n > 1 else 0.0 for j in range(n)]  # linear, 0 -> drop_path
        for i in self.stage_ids:
            k = i - 1
            in_ch = in_channels if i == 1 else v.widths[k - 1]
            kernel, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(in_ch, v.widths[k], kernel, stride))
            start = sum(v.depths[:k])
            setattr(self, f"block{i}", nn.ModuleList(
                MiTBlock(v.widths[k], v.heads[k], v.sr_ratios[k], v.mlp_ratio, rates[start + j])
                for j in range(v.depths[k])))
            setattr(self, f"norm{i}", nn.LayerNorm(v.widths[k], eps=1e-6))
        self.apply(_init_weights)

    # --- what load_pretrained needs to know ---
    @property
    def pretrained_first_conv(self) -> str | None:
        """State-dict key of the convolution that sees the input bands (None without stage 1)."""
        return "patch_embed1.proj.weight" if self.first_stage == 1 else None

    @property
    def pretrained_ignored_prefixes(self) -> tuple[str, ...]:
        """Keys of a full-encoder weights file that this module does not hold (not an error)."""
        skipped = tuple(p for i in range(1, self.first_stage) for p in (f"patch_embed{i}.", f"block{i}.", f"norm{i}."))
        return ("head.",) + skipped

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` (1..4) on ``(B, C, H, W)``: ``(B, widths[i-1], ceil(H/s), ceil(W/s))``, s = 4 for
        stage 1, else 2."""
        if i not in self.stage_ids:
            raise ValueError(f"this encoder holds stages {self.stage_ids}, not {i}")
        x, h, w = getattr(self, f"patch_embed{i}")(x)
        for blk in getattr(self, f"block{i}"):
            x = blk(x, h, w)
        x = getattr(self, f"norm{i}")(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def extra_repr(self) -> str:
        return (f"variant={self.variant!r}, in_channels={self.in_channels}, widths={self.widths}, "
                f"depths={self.depths}, drop_path={self.drop_path}, first_stage={self.first_stage}")


def _init_weights(m: nn.Module) -> None:
    """SegFormer's initialisation: truncated normal (std 0.02) linears, fan-out normal convs, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# Pretrained weights
# ---------------------------------------------------------------------------------------------

def _state_dict_of(obj: Any, uri: str, field: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise ConfigError(field, f"{uri} holds no state dict (a mapping of names to tensors, or "
                                 f"{{'state_dict': ...}}); got {type(obj).__name__}")
    return dict(obj)


def _strip_prefixes(sd: dict[str, torch.Tensor], ours: set[str]) -> dict[str, torch.Tensor]:
    """Drop a DDP ``module.`` prefix; take the ``backbone.``/``encoder.`` part of a whole-model file."""
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not ours & set(sd):
        for prefix in ("backbone.", "encoder."):
            sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if ours & set(sub):
                return sub
    return sd


def _short(keys: list[str], n: int = 6) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filters ``(O, 3, k, k)`` -> ``(O, C, k, k)``: band c takes RGB filter ``c % 3``, all
    scaled by ``3 / C`` (CloudSeg's adaptation of ImageNet weights to multi-band input)."""
    idx = torch.arange(in_channels) % weight.shape[1]
    return weight[:, idx] * (weight.shape[1] / in_channels)


def load_pretrained(encoder: nn.Module, uri: str, *, strict: bool = True,
                    field: str = "encoder.pretrained") -> dict[str, list[str]]:
    """Load encoder weights from ``uri`` (local path, ``file://`` or ``s3://``) into ``encoder`` in place.

    ``encoder`` is a :class:`MiT` (or any module with ``pretrained_first_conv`` and
    ``pretrained_ignored_prefixes``, e.g. raypipe's ``ResNetEncoder``). The file is read with
    ``torch.load(weights_only=True)``: tensors only, no pickled code. A 3-channel first convolution
    is adapted to the encoder's band count (:func:`adapt_first_conv`). Keys of stages the encoder
    does not hold, and a classifier ``head.*``, are ignored.

    Raises ``ConfigError`` naming ``field`` for an unreadable file, a file without a state dict, a
    tensor whose shape differs, or (``strict``) missing or unexpected keys. Returns
    ``{"missing": [...], "unexpected": [...]}`` (empty when ``strict``).
    """
    from raypipe import storage
    from raypipe.errors import StorageError

    try:
        data = storage.read_bytes(uri)
    except (StorageError, OSError) as e:
        raise ConfigError(field, f"cannot read pretrained weights {storage.redact(uri)}: {e}") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise ConfigError(field, f"{storage.redact(uri)} is not a PyTorch weights file readable with "
                                 f"weights_only=True ({type(e).__name__}: {str(e)[:200]})") from None
    uri = storage.redact(uri)
    own = encoder.state_dict()
    sd = _strip_prefixes(_state_dict_of(obj, uri, field), set(own))
    ignored = tuple(getattr(encoder, "pretrained_ignored_prefixes", ("head.",)))
    sd = {k: v for k, v in sd.items() if not k.startswith(ignored)}
    first = getattr(encoder, "pretrained_first_conv", None)
    if first is not None and first in sd and first in own:
        w, want = sd[first], own[first]
        if w.dim() == 4 and w.shape[1] == 3 and want.shape[1] != 3 and w.shape[0] == want.shape[0] \
                and w.shape[2:] == want.shape[2:]:
            sd[first] = adapt_first_conv(w, want.shape[1])
    for k, v in sd.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise ConfigError(field, f"{uri}: tensor '{k}' has shape {tuple(v.shape)} but the encoder "
                                     f"expects {tuple(own[k].shape)} (wrong variant or width?)")
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        raise ConfigError(field, f"{uri} does not match the encoder ({'; '.join(parts)}); "
                                 f"set strict: false to load the tensors that match")
    encoder.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}
