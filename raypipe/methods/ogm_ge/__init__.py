"""OGM-GE (Peng et al., CVPR 2022; GeWu-Lab/OGM-GE_CVPR2022): a concat-fusion optical + SAR student on
f_S's filtered pseudo labels (the MTTS stage-1 filter; the target has no labels), whose stronger
modality's encoder gradients are slowed per batch by ``k = 1 − tanh(α·ρ)`` plus Gaussian noise (GE),
in the early epochs. Knobs: ``stages.student.ogm.{mode, alpha, modulation_epochs, params}`` and
``stages.student.filter.*``. See objective.py and docs/methods.md."""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL
from raypipe.methods.ogm_ge.objective import OGMGE, OGMGEConfig  # registers ogm_ge

METHOD = Method(
    name="ogm_ge",
    description="OGM-GE: fused-CE optical + SAR student on f_S's filtered pseudo labels, stronger encoder's gradients modulated",
    stages=(SOURCE,
            Stage("student", objective="ogm_ge", inputs="both", teachers=("source",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST}, description="OGM-GE student on pseudo labels")),
    defaults={"data": DATA_DEFAULTS, "stages": {"source": SOURCE_DEFAULTS, "student": {"model": dict(TINY_MULTIMODAL)}}},
    table=(SOURCE_ROW, Row("OGM-GE student (optical + SAR)", "student")),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "OGMGE", "OGMGEConfig"]
