"""An open registry: a thing registers itself by name where it is defined, and nothing else needs an
edit. ``get`` fails with a :class:`~raypipe.errors.ConfigError` naming the config field and listing
what is registered. (At the bottom of the package, beside config and errors: models, objectives and
methods all use it.)"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from raypipe.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """``REG.register("name", obj)``, or ``@REG.register("name")`` as a decorator."""
        def put(item: Any) -> Any:
            existing = self._items.get(name)
            if existing is not None and existing is not item and not _same_definition(existing, item):
                raise ValueError(f"{self.kind} '{name}' is already registered ({_qualname(existing)})")
            self._items[name] = item
            return item

        return put if obj is None else put(obj)

    def get(self, name: str, field: str = "") -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(field or self.kind, f"unknown {self.kind} '{name}' (registered: {self.names()})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self._items[n]) for n in self.names()]


def _same_definition(a: Any, b: Any) -> bool:
    """The same class or function defined again (a module imported twice), not a different object."""
    return hasattr(a, "__qualname__") and hasattr(b, "__qualname__") and _qualname(a) == _qualname(b)


def _qualname(obj: Callable | Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
