"""Source-only: f_S, trained with labels on the source domain's cloud-free optical tiles, applied to
the target's cloudy optical as it is. The lower bound every transfer method must beat."""

from raypipe.engine.method import Method
from raypipe.engine.registry import METHODS
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW

METHOD = Method(
    name="source_only",
    description="source-only: f_S (cloud-free source optical) applied to target cloudy optical; the lower bound",
    stages=(SOURCE,),
    defaults={"data": DATA_DEFAULTS, "stages": {"source": SOURCE_DEFAULTS}},
    table=(SOURCE_ROW,),
)
METHODS.register(METHOD.name, METHOD)
