"""The engine: stage key → reuse or train (Ray Train) → evaluate → MLflow lineage, for any method.

It knows stages, never methods: a method is a folder under ``raypipe/methods/`` that declares its
stages as data (:class:`~raypipe.engine.method.Method`) and registers itself in ``METHODS``.
"""

from raypipe.engine.config import RayConfig, StageConfig, TrackingConfig, TrainConfig, resolve
from raypipe.engine.method import SOURCE_TEST, SOURCE_TRAIN, TARGET_TEST, TARGET_TRAIN, Method, Row, Stage, View
from raypipe.engine.objective import Objective, forward, main_logits
from raypipe.engine.registry import METHODS, OBJECTIVES, TASKS, Registry

__all__ = [
    "METHODS", "OBJECTIVES", "TASKS", "Registry", "Method", "Stage", "View", "Row", "Objective",
    "SOURCE_TRAIN", "SOURCE_TEST", "TARGET_TRAIN", "TARGET_TEST", "StageConfig", "TrainConfig", "RayConfig",
    "TrackingConfig", "resolve", "forward", "main_logits", "run_method",
]


def run_method(method, cfg, console=None):
    """Run ``method`` (a :class:`Method`) with its resolved ``cfg`` (see :mod:`raypipe.engine.run`)."""
    from raypipe.engine.run import run_method as _run

    return _run(method, cfg, console)
