"""TLF, late fusion (the review of Signal Processing 213, 109165, gives the form only): an optical and a
SAR classifier, each trained on f_S's filtered pseudo labels (the MTTS stage-1 filter, since the target
has no labels), fused by averaging their logits. raypipe's choices (no public code): both classifiers
in one ``multimodal`` module with ``fusion: late``, trained on the same pseudo labels at once."""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL
from raypipe.methods.tlf import objective  # noqa: F401  (registers tlf)

METHOD = Method(
    name="tlf",
    description="TLF: late fusion (mean of optical and SAR logits), each trained on f_S's filtered pseudo labels",
    stages=(SOURCE,
            Stage("late_fusion", objective="tlf", inputs="both", teachers=("source",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST}, description="optical + SAR heads, logits averaged")),
    defaults={"data": DATA_DEFAULTS,
              "stages": {"source": SOURCE_DEFAULTS, "late_fusion": {"model": {**TINY_MULTIMODAL, "fusion": "late"}}}},
    table=(SOURCE_ROW, Row("TLF late fusion (optical + SAR)", "late_fusion")),
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD"]
