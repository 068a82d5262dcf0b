"""ResNet family (depth 10/18/34/50) in plain PyTorch, for multi-band remote-sensing tiles.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. Depths 10/18/34 use
basic blocks, 50 uses bottleneck blocks (stride on the 3x3 conv, "ResNet v1.5"). Differences
from the ImageNet model, all configurable:

* ``in_channels``: any band count (2 for Sentinel-1 VV/VH, 10 or 13 for Sentinel-2,
  4 for PlanetScope / GF-1, 1 for GF-3).
* ``width``: base channel count (64 is the standard model; 8 gives a tiny test model).
  Stage widths are ``width * (1, 2, 4, 8)`` (times 4 at the output of bottleneck blocks).
* ``stem``: ``"standard"`` is the 7x7 stride-2 convolution + 3x3 stride-2 max-pool (total
  stride 4 before stage 1), right for 256 px SEN12MS tiles; ``"small"`` is a 3x3 stride-1
  convolution without max-pool, for tiles of 64 px or less, where the standard stem would
  leave a 2x2 map after stage 4.

``forward_features(x)`` returns the globally average-pooled features, shape
``(B, feature_dim)``; ``forward(x)`` returns logits ``(B, num_classes)``, or the features
when the model was built headless (``num_classes=0``, used as an encoder).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_DEPTHS", "RESNET_STEMS"]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


RESNET_NORMS: tuple[str, ...] = ("batch", "group")


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch``: BatchNorm2d (converted to SyncBatchNorm by the trainer under multi-GPU DDP);
    ``group``: GroupNorm with up to 32 groups, independent of the batch, so results do not depend on
    how a global batch is split across workers (and usable with tiny per-worker batches)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be one of {RESNET_NORMS}, got {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, out_ch)
        self.bn2 = make_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), make_norm(norm, out_ch))

    @property
    def last_bn(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with an identity or projection shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = _conv1x1(planes, out_ch)
        self.bn3 = make_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), make_norm(norm, out_ch))

    @property
    def last_bn(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block type, blocks per stage)
RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
RESNET_STEMS: tuple[str, ...] = ("standard", "small")


class ResNet(nn.Module):
    """Configurable ResNet classifier / encoder.

    Args:
        depth: 10, 18, 34 (basic blocks) or 50 (bottleneck blocks).
        in_channels: number of input bands.
        num_classes: classifier outputs; 0 builds a headless encoder (``forward`` returns features).
        width: base channel count (64 = standard).
        stem: ``"standard"`` (7x7/2 + max-pool) or ``"small"`` (3x3/1, no max-pool; tiles <= 64 px).
        zero_init_residual: zero the last BatchNorm gamma of every residual block, so each block
            starts as the identity (Goyal et al. 2017); helps large-batch training.
        dropout: dropout probability before the classifier (0 = none).

    Attributes:
        feature_dim: size of the pooled feature vector (``8 * width * expansion``).
    """

    def __init__(
        self,
        depth: int = 18,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
        stem: str = "standard",
        zero_init_residual: bool = False,
        dropout: float = 0.0,
        norm: str = "batch",
    ):
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
        if stem not in RESNET_STEMS:
            raise ValueError(f"stem must be one of {RESNET_STEMS}, got {stem!r}")
        if in_channels < 1 or width < 1 or num_classes < 0:
            raise ValueError("in_channels and width must be >= 1 and num_classes >= 0")
        if norm not in RESNET_NORMS:
            raise ValueError(f"norm must be one of {RESNET_NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        block, layers = RESNET_DEPTHS[depth]
        self.depth = depth
        self.in_channels = in_channels
        self.width = width
        self.stem_kind = stem

        if stem == "standard":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False),
                make_norm(norm, width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                _conv3x3(in_channels, width),
                make_norm(norm, width),
                nn.ReLU(inplace=True),
            )

        in_ch = width
        stages = []
        for i, n_blocks in enumerate(layers):
            planes = width * (2**i)
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_ch, planes, stride if j == 0 else 1, norm))
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_ch
        self.num_classes = 0
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc: nn.Linear | None = None
        self.reset_classifier(num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one (``num_classes=0`` removes it)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        if num_classes == 0:
            self.fc = None
        else:
            self.fc = nn.Linear(self.feature_dim, num_classes)
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, feature_dim)``."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``; the pooled features if the model is headless."""
        feats = self.forward_features(x)
        if self.fc is None:
            return feats
        return self.fc(self.drop(feats))

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, in_channels={self.in_channels}, width={self.width}, "
                f"stem={self.stem_kind!r}, num_classes={self.num_classes}")
