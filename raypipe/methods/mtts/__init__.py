"""MTTS + IRM: multi-step transfer from a cloud-free optical source model to an optical + SAR target.

Stage 0 (``source``): f_S, supervised on the source domain's cloud-free optical tiles.
Stage 1 (``aux_optical``, ``aux_sar``): f_T_Opt on target cloudy optical and f_T_SAR on target SAR,
trained from f_S's logit-filtered pseudo labels on the target training set (no target labels).
Stage 2 (``target``): f_T on optical + SAR, distilled from f_S and both auxiliary models through IRM.

Knobs: ``stages.aux_optical.filter.*``, ``stages.aux_sar.filter.*`` (threshold, rule, …),
``stages.target.irm.*`` (mode, alpha, w_min, temperature, reference, cloud_prior),
``stages.target.{temperature, lambda_src, lambda_aux, lambda_uni, src_weighting, filter.*}``, and every
stage's ``model`` and ``train.*``. Formulas and choices: docs/methods.md.

The embedded default switches on raypipe's cloud-aware extensions (``CLOUD_GATE``,
``CLOUD_AWARE_TARGET``); ``configs/mtts_published.yaml`` is MTTS as published.
"""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL, TINY_OPTICAL, TINY_SAR
from raypipe.methods.mtts import objective  # noqa: F401  (registers irm_distill)
from raypipe.methods.mtts.config import DistillConfig, IRMConfig

_EVAL = {"target_test": TARGET_TEST}

# The embedded default is the cloud-aware form (docs/methods.md, "Cloud-aware extensions"): on the
# generated benchmark, with training-time cloud fractions from the detector, it beat the published form
# on target val (3 seeds, docs/benchmarks.md), and the published form lost to source-only. The
# published form is configs/mtts_published.yaml.
CLOUD_GATE = {"max_cloud_fraction": 0.1}
CLOUD_AWARE_TARGET = {"irm": {"cloud_prior": True}, "src_weighting": "irm_opt"}

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
              "stages": {"source": SOURCE_DEFAULTS,
                         "aux_optical": {"model": dict(TINY_OPTICAL), "filter": dict(CLOUD_GATE)},
                         "aux_sar": {"model": dict(TINY_SAR), "filter": dict(CLOUD_GATE)},
                         "target": {"model": dict(TINY_MULTIMODAL), **CLOUD_AWARE_TARGET}}},
    default_note=("cloud-aware MTTS (raypipe's extensions, chosen on val with detected masks: stage-1 cloud "
                  "gate 0.1, IRM cloud prior, IRM-weighted f_S); the published form: --config "
                  "configs/mtts_published.yaml"),
    table=(SOURCE_ROW, Row("aux optical f_T_Opt", "aux_optical"), Row("aux SAR f_T_SAR", "aux_sar"),
           Row("target f_T (IRM)", "target")),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "DistillConfig", "IRMConfig"]
