"""Models in plain PyTorch: a configurable ResNet family and a two-branch optical + SAR network."""

from raypipe.models.factory import (
    MODEL_KINDS,
    MODELS,
    build_model,
    check_model_inputs,
    model_spec_in_channels,
    register_model,
)
from raypipe.models.multimodal import FUSIONS, MODALITIES, MultiModalNet, MultiModalOutput
from raypipe.models.resnet import RESNET_DEPTHS, RESNET_STEMS, BasicBlock, Bottleneck, ResNet

__all__ = [
    "ResNet", "BasicBlock", "Bottleneck", "RESNET_DEPTHS", "RESNET_STEMS",
    "MultiModalNet", "MultiModalOutput", "MODALITIES", "FUSIONS",
    "build_model", "model_spec_in_channels", "check_model_inputs", "MODEL_KINDS", "MODELS", "register_model",
]
