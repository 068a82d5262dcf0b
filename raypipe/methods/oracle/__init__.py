"""Oracles: supervised on the **target** training split's labels, which a real user of a transfer method
does not have. They bound what the data allows: S2-only (cloudy optical), S1-only (SAR) and early fusion
(optical and SAR bands stacked into one ResNet). Every row is marked ``[oracle: labels]``."""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, TINY_OPTICAL, TINY_SAR

_EVAL = {"target_test": TARGET_TEST}

METHOD = Method(
    name="oracle",
    description="oracles (target labels): S2-only, S1-only and early fusion, supervised on target train",
    stages=(
        Stage("s2_only", objective="supervised", inputs="optical", train=TARGET_TRAIN, evaluate=_EVAL,
              description="supervised on target cloudy optical (oracle)"),
        Stage("s1_only", objective="supervised", inputs="sar", train=TARGET_TRAIN, evaluate=_EVAL,
              description="supervised on target SAR (oracle)"),
        Stage("early_fusion", objective="supervised", inputs="both", train=TARGET_TRAIN, evaluate=_EVAL,
              description="supervised on target optical + SAR stacked (oracle)"),
    ),
    defaults={"data": DATA_DEFAULTS,
              "stages": {"s2_only": {"model": dict(TINY_OPTICAL)}, "s1_only": {"model": dict(TINY_SAR)},
                         "early_fusion": {"model": {"kind": "early_fusion",
                                                    "encoder": {k: v for k, v in TINY_OPTICAL.items() if k != "kind"}}}}},
    table=(Row("S2-only (target labels)", "s2_only", oracle=True),
           Row("S1-only (target labels)", "s1_only", oracle=True),
           Row("early fusion S2 + S1 (target labels)", "early_fusion", oracle=True)),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD"]
