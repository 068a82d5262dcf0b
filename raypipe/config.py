"""Configuration as data: nested dataclasses, resolved once, validated up front, logged whole.

* :func:`from_dict` builds a dataclass tree from plain dicts (YAML), rejecting unknown keys and
  wrong types with a :class:`~raypipe.errors.ConfigError` that names the dotted field.
* :func:`apply_overrides` applies ``--set a.b.c=value`` strings (values parsed as YAML scalars).
* :func:`to_dict` turns a resolved config back into plain data for logging (MLflow params, JSON).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable, Mapping

import yaml

from raypipe import storage
from raypipe.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML_BOOL_WORDS = {False: ("off", "no", "n", "false"), True: ("on", "yes", "y", "true")}


def _parse_scalar(raw: str) -> Any:
    """A ``--set`` value as YAML, except that on/off/yes/no stay words (``irm.mode=off``) and an empty
    value is the empty string (``--set data.source_domain=``), not YAML's null."""
    if not raw.strip():
        return ""
    if raw.strip().lower() in ("on", "off", "yes", "no", "y", "n"):
        return raw.strip()
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Check (and gently coerce: int -> float, list -> tuple) ``value`` against annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(field, f"{value!r} is not any of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        if isinstance(value, bool) and value not in args:  # YAML 1.1 reads off/on/no/yes as booleans
            spelled = [a for a in args if isinstance(a, str) and a.lower() in _YAML_BOOL_WORDS[value]]
            if len(spelled) == 1:
                return spelled[0]
        if value not in args:
            raise ConfigError(field, f"{value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, field)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {type(value).__name__} {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{field}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(field, f"expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Mapping[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError(field)."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown key (known keys here: {sorted(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}" if path else name)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(path or cls.__name__, str(exc)) from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (lists kept as values), for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def load_yaml(uri: str) -> dict:
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("--config", f"file {uri} does not exist") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{uri} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{uri} must hold a mapping at top level")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.path=value`` strings to a nested dict (copy). Values are parsed as YAML scalars."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", f"'{item}' is not of the form key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError("--set", f"'{item}' has an empty key")
        value = _parse_scalar(raw)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(key, f"cannot set a sub-key of '{part}', which is {nxt!r}")
            node = nxt
        node[parts[-1]] = value
    return out


def deep_merge(base: Mapping, update: Mapping) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
