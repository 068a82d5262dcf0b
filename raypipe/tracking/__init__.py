"""MLflow tracking for raypipe, split by concern:

* :mod:`~raypipe.tracking.keys`: tag names, run kinds, :func:`stage_key`, :func:`config_params`
  (with secret redaction);
* :mod:`~raypipe.tracking.uris`: :func:`resolve_tracking_uri`;
* :mod:`~raypipe.tracking.handle`: :class:`RunHandle`, what Ray workers log metrics through;
* :mod:`~raypipe.tracking.artifacts`: JSON/YAML/text artifacts and evaluation results;
* :mod:`~raypipe.tracking.checkpoints`: tensors + JSON spec, loaded with ``weights_only=True``;
* :mod:`~raypipe.tracking.lineage`: the run tree (:class:`Lineage`, :class:`TrackedRun`,
  :class:`StageRun`): pipeline and stage runs, reuse, run checks, checkpoint loading.

Free of Ray imports: Ray workers import it for :class:`RunHandle`.
"""

from raypipe.tracking.checkpoints import CheckpointError
from raypipe.tracking.handle import RunHandle
from raypipe.tracking.keys import KIND_PIPELINE, KIND_STAGE, KIND_STAGE_REUSED, config_params, stage_key
from raypipe.tracking.lineage import Lineage, StageRun, TrackedRun
from raypipe.tracking.uris import resolve_tracking_uri

__all__ = [
    "Lineage", "TrackedRun", "StageRun", "RunHandle", "stage_key", "resolve_tracking_uri",
    "config_params", "KIND_PIPELINE", "KIND_STAGE", "KIND_STAGE_REUSED", "CheckpointError",
]
