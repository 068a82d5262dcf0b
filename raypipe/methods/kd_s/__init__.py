"""KD-S: soft-target knowledge distillation (Hinton et al. 2015; Knowledge-Distillation-Zoo's
``kd_losses/st.py``) from the source model f_S into a multi-modal optical + SAR student on the target
training split. ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, T = 4 (``stages.student.temperature``);
f_S sees the target's cloudy optical. No cross-entropy: the target has no labels."""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL
from raypipe.methods.kd_s.objective import SoftKD, SoftKDConfig  # registers soft_kd

METHOD = Method(
    name="kd_s",
    description="KD-S: soft-target KD (T^2 KL, T = 4) from f_S into a multi-modal student, no target labels",
    stages=(SOURCE,
            Stage("student", objective="soft_kd", inputs="both", teachers=("source",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST}, description="multi-modal student: KD from f_S")),
    defaults={"data": DATA_DEFAULTS, "stages": {"source": SOURCE_DEFAULTS, "student": {"model": dict(TINY_MULTIMODAL)}}},
    table=(SOURCE_ROW, Row("KD-S student (optical + SAR)", "student")),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "SoftKD", "SoftKDConfig"]
