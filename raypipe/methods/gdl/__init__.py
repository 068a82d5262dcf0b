"""GDL (GDNet, shicaiwei123/TGRS-GDNet): Gaussian embeddings per modality, a fused and two unimodal
outputs, CE + beta * (unimodal CE + MSE to the fused output) + 1e-4 * KL; without target labels, on
f_S's filtered pseudo labels (the MTTS stage-1 filter). Selection follows ``train.selection`` like every
method (the public code picks the best *test* epoch; raypipe does not). See objective.py."""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL
from raypipe.methods.gdl import objective  # noqa: F401  (registers gdl)
from raypipe.methods.gdl.objective import GDL, GDLConfig

METHOD = Method(
    name="gdl",
    description="GDL: Gaussian-embedding multi-modal student (CE + beta (uni CE + MSE) + KL) on f_S's filtered pseudo labels",
    stages=(SOURCE,
            Stage("student", objective="gdl", inputs="both", teachers=("source",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST}, description="GDNet student on pseudo labels")),
    defaults={"data": DATA_DEFAULTS,
              "stages": {"source": SOURCE_DEFAULTS, "student": {"model": {**TINY_MULTIMODAL, "variational": True}}}},
    table=(SOURCE_ROW, Row("GDL student (optical + SAR)", "student")),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "GDL", "GDLConfig"]
