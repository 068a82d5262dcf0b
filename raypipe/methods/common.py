"""Declarations several methods share: the source model stage and the default backbones (so that every
method compares on the same source model f_S, trained once and reused by its stage key)."""

from __future__ import annotations

from raypipe.engine.method import SOURCE_TEST, SOURCE_TRAIN, TARGET_TEST, Row, Stage

# The embedded default backbones: small enough for 2 CPUs. ResNet-18 optical, ResNet-10 SAR (as MTTS).
TINY_OPTICAL = {"kind": "resnet", "depth": 18, "width": 16, "stem": "small"}
TINY_SAR = {"kind": "resnet", "depth": 10, "width": 16, "stem": "small"}
TINY_MULTIMODAL = {"kind": "multimodal", "optical": {k: v for k, v in TINY_OPTICAL.items() if k != "kind"},
                   "sar": {k: v for k, v in TINY_SAR.items() if k != "kind"}}

# Stage 0 of every transfer method: f_S, supervised on the source domain's cloud-free optical tiles,
# evaluated on the target's cloudy optical (source-only) and on its own domain (did it learn?).
SOURCE = Stage("source", objective="supervised", inputs="optical", train=SOURCE_TRAIN,
               evaluate={"target_test": TARGET_TEST, "source_test": SOURCE_TEST},
               description="f_S: supervised on source cloud-free optical")
SOURCE_DEFAULTS = {"model": dict(TINY_OPTICAL)}
SOURCE_ROW = Row("source-only (f_S on target optical)", "source", "target_test")
DATA_DEFAULTS = {"pipeline": {"clouds": {"mode": "auto"}}}
