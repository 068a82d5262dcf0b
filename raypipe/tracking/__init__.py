"""MLflow lineage of pipeline and stage runs (see :mod:`raypipe.tracking.lineage`).

Free of Ray imports: Ray workers import it for :class:`RunHandle`.
"""

from raypipe.tracking.lineage import (
    KIND_PIPELINE,
    KIND_STAGE,
    KIND_STAGE_REUSED,
    Lineage,
    RunHandle,
    StageRun,
    TrackedRun,
    config_params,
    resolve_tracking_uri,
    stage_key,
)

__all__ = [
    "Lineage", "TrackedRun", "StageRun", "RunHandle", "stage_key", "resolve_tracking_uri",
    "config_params", "KIND_PIPELINE", "KIND_STAGE", "KIND_STAGE_REUSED",
]
