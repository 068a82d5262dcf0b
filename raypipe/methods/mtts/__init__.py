"""MTTS + IRM: multi-step transfer from a cloud-free optical source model to an optical + SAR target.

Stage 0 (``source``): f_S, supervised on the source domain's cloud-free optical tiles.
Stage 1 (``aux_optical``, ``aux_sar``): f_T_Opt on target cloudy optical and f_T_SAR on target SAR,
trained from f_S's logit-filtered pseudo labels on the target training set (no target labels).
Stage 2 (``target``): f_T on optical + SAR, distilled from f_S and both auxiliary models through IRM.

Knobs: ``stages.aux_optical.filter.*``, ``stages.aux_sar.filter.*`` (threshold, rule, …),
``stages.target.irm.*`` (mode, alpha, w_min, temperature, reference, cloud_prior),
``stages.target.{temperature, lambda_src, lambda_aux, lambda_uni, src_weighting, filter.*}``, and every
stage's ``model`` and ``train.*``. Formulas and choices: docs/methods.md.
"""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL, TINY_OPTICAL, TINY_SAR
from raypipe.methods.mtts import objective  # noqa: F401  (registers irm_distill)
from raypipe.methods.mtts.config import DistillConfig, IRMConfig

_EVAL = {"target_test": TARGET_TEST}

METHOD = Method(
    name="mtts",
    description="MTTS + IRM: source -> auxiliary optical / SAR (filtered pseudo labels) -> multi-modal target (IRM)",
    stages=(
        SOURCE,
        Stage("aux_optical", objective="pseudo_label", inputs="optical", teachers=("source",), train=TARGET_TRAIN,
              evaluate=_EVAL, description="f_T_Opt: f_S's filtered pseudo labels on target cloudy optical"),
        Stage("aux_sar", objective="pseudo_label", inputs="sar", teachers=("source",), train=TARGET_TRAIN,
              evaluate=_EVAL, description="f_T_SAR: f_S's filtered pseudo labels on target SAR"),
        Stage("target", objective="irm_distill", inputs="both", teachers=("source", "aux_optical", "aux_sar"),
              train=TARGET_TRAIN, evaluate=_EVAL, description="f_T: KD from all three through IRM"),
    ),
    defaults={"data": DATA_DEFAULTS,
              "stages": {"source": SOURCE_DEFAULTS, "aux_optical": {"model": dict(TINY_OPTICAL)},
                         "aux_sar": {"model": dict(TINY_SAR)}, "target": {"model": dict(TINY_MULTIMODAL)}}},
    table=(SOURCE_ROW, Row("aux optical f_T_Opt", "aux_optical"), Row("aux SAR f_T_SAR", "aux_sar"),
           Row("target f_T (IRM)", "target")),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "DistillConfig", "IRMConfig"]
