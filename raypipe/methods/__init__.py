"""Methods: one folder each, declaring its stages as data and registering itself in
``raypipe.engine.METHODS``. Importing this package imports every method folder in it, so a new method
needs no edit anywhere else.

    from raypipe.methods import load_methods
    load_methods()
    METHODS.names()   # ['kd_s', 'mtts', 'source_only', ...]
"""

from __future__ import annotations

import importlib
import pkgutil

from raypipe.engine.registry import METHODS


def load_methods():
    """Import every method folder under ``raypipe/methods/``; returns the method registry."""
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")
    return METHODS


def get_method(name: str, field: str = "--method"):
    return load_methods().get(name, field)


__all__ = ["load_methods", "get_method", "METHODS"]
