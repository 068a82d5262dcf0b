"""Models in plain PyTorch: a configurable ResNet family, a two-branch optical + SAR classifier, and
segmentation networks (MiT / ResNet encoders, U-Net decoder, the three-stream CloudSeg network)."""

from raypipe.models.cloudseg import CloudSegNet, FusionBlock, MultiScaleContext, SpatialGate, SqueezeExcite
from raypipe.models.factory import (
    MODEL_KINDS,
    MODELS,
    TWO_INPUT_KINDS,
    build_model,
    check_model_inputs,
    model_spec_in_channels,
    register_model,
)
from raypipe.models.mit import MIT_VARIANTS, MiT, MiTVariant, adapt_first_conv, load_pretrained
from raypipe.models.multimodal import FUSIONS, MODALITIES, MultiModalNet, MultiModalOutput
from raypipe.models.resnet import RESNET_DEPTHS, RESNET_STEMS, BasicBlock, Bottleneck, ResNet
from raypipe.models.restoration import Declouder, PatchDiscriminator, RestorationOutput, RestoreThenClassify
from raypipe.models.unet import (
    ENCODER_TYPES,
    EarlyFusionSegNet,
    ResNetEncoder,
    SegNet,
    SegOutput,
    UNetDecoder,
    build_encoder,
    default_decoder_channels,
)

__all__ = [
    "Declouder", "PatchDiscriminator", "RestorationOutput", "RestoreThenClassify",
    "ResNet", "BasicBlock", "Bottleneck", "RESNET_DEPTHS", "RESNET_STEMS",
    "MultiModalNet", "MultiModalOutput", "MODALITIES", "FUSIONS",
    "MiT", "MiTVariant", "MIT_VARIANTS", "load_pretrained", "adapt_first_conv",
    "SegOutput", "UNetDecoder", "ResNetEncoder", "SegNet", "EarlyFusionSegNet", "build_encoder",
    "default_decoder_channels", "ENCODER_TYPES",
    "CloudSegNet", "FusionBlock", "MultiScaleContext", "SqueezeExcite", "SpatialGate",
    "build_model", "model_spec_in_channels", "check_model_inputs", "MODEL_KINDS", "TWO_INPUT_KINDS", "MODELS",
    "register_model",
]
