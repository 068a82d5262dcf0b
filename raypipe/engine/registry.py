"""Open registries of the engine: a method, an objective or a task registers itself by name where it
is defined, and nothing else needs an edit (model kinds: ``raypipe.models.MODELS``).

    from raypipe.engine.registry import OBJECTIVES

    @OBJECTIVES.register("supervised")
    class Supervised(Objective): ...

``get`` fails with a :class:`~raypipe.errors.ConfigError` naming the config field and listing what is
registered.
"""

from __future__ import annotations

from raypipe.registry import Registry

__all__ = ["Registry", "METHODS", "OBJECTIVES", "TASKS"]

METHODS = Registry("method")
OBJECTIVES = Registry("objective")
TASKS = Registry("task")
