"""TTL, transitive transfer learning (JSTARS 2023, 10.1109/JSTARS.2023.3269852; paper only): instead of
jumping from the cloud-free source to the cloudy target at once, transfer through an intermediate
domain chosen by a single factor, here the tile's cloud fraction.

raypipe's form (the paper's code is not public; docs/methods.md):

* ``source``: f_S, supervised on cloud-free source optical (shared with every method).
* ``intermediate``: an optical + SAR network on the target tiles whose cloud fraction is below
  ``stages.intermediate.filter.max_cloud_fraction`` (0.5: clear and partly cloudy), learning f_S's
  logit-filtered pseudo labels there (the MTTS stage-1 filter). The cloud fraction is the training-time
  source of ``data.pipeline.clouds`` (the detector on the generated benchmark; simulator truth only when
  asked for, and then marked oracle).
* ``student``: a fresh optical + SAR network on every target training tile, learning the intermediate
  model's filtered pseudo labels (it reads SAR too, so it can label the cloudy tiles f_S cannot).
"""

from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL

INTERMEDIATE_MAX_CLOUD = 0.5

METHOD = Method(
    name="ttl",
    description="TTL: transitive transfer f_S -> partly-cloudy target (intermediate) -> all target tiles, pseudo labels",
    stages=(SOURCE,
            Stage("intermediate", objective="pseudo_label", inputs="both", teachers=("source",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST},
                  description="intermediate domain: f_S's pseudo labels on tiles with cloud fraction < 0.5"),
            Stage("student", objective="pseudo_label", inputs="both", teachers=("intermediate",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST},
                  description="target: the intermediate model's pseudo labels on every tile")),
    defaults={"data": DATA_DEFAULTS,
              "stages": {"source": SOURCE_DEFAULTS,
                         "intermediate": {"model": dict(TINY_MULTIMODAL),
                                          "filter": {"max_cloud_fraction": INTERMEDIATE_MAX_CLOUD}},
                         "student": {"model": dict(TINY_MULTIMODAL)}}},
    table=(SOURCE_ROW, Row("TTL intermediate (clear + partly cloudy tiles)", "intermediate"),
           Row("TTL student (optical + SAR)", "student")),
    main_stage="student",
)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD"]
