"""Search spaces: a YAML file of dotted config paths (the names of ``--set``) and their distributions.

    # configs/sweeps/mtts_filter.yaml
    description: stage-1 pseudo-label filter
    params:
      stages.aux_optical.filter.threshold: {uniform: [0.5, 0.99]}
      stages.aux_sar.filter.threshold: {same_as: stages.aux_optical.filter.threshold}
      stages.aux_optical.filter.rule: {choice: [max_softmax, margin]}

Distributions: ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``quniform: [lo, hi, q]``,
``randint: [lo, hi]`` (hi excluded), ``choice: [a, b, …]``, ``grid: [a, b, …]`` (every value, once per
sample of the others: with ``--search grid`` each value set is one trial; with ``random`` and
``optuna`` a grid is drawn like a choice). ``same_as: PATH`` gives a path the value drawn for another
(one threshold for both auxiliary models). Every path is checked against the method's configuration
on the driver, with the space's bounds and choices, before anything trains.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from raypipe.errors import ConfigError

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice", "grid")


@dataclass(frozen=True)
class Param:
    path: str  # dotted config path, e.g. stages.target.irm.alpha
    kind: str  # one of DISTRIBUTIONS
    args: tuple

    def values_to_check(self) -> list:
        """Values that exercise the config's validation: the bounds, or every choice."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return [self.args[0], self.args[1]]

    def sample_values(self) -> list:
        """A few values spread over the domain (used to find which stages a parameter changes)."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        lo, hi = self.args[0], self.args[1] - (1 if self.kind == "randint" else 0)
        mid = math.sqrt(lo * hi) if self.kind == "loguniform" else (lo + hi) / 2
        if self.kind == "randint":
            mid = int(mid)
        return [lo, mid, hi]

    def tune_domain(self, search: str):
        from ray import tune

        a = self.args
        if self.kind == "uniform":
            return tune.uniform(a[0], a[1])
        if self.kind == "loguniform":
            return tune.loguniform(a[0], a[1])
        if self.kind == "quniform":
            return tune.quniform(a[0], a[1], a[2])
        if self.kind == "randint":
            return tune.randint(a[0], a[1])
        if self.kind == "grid" and search == "grid":
            return tune.grid_search(list(a))
        return tune.choice(list(a))


@dataclass
class SearchSpace:
    params: dict[str, Param]
    tied: dict[str, str] = field(default_factory=dict)  # path -> the path whose value it takes
    description: str = ""
    source: str = "<space>"

    @property
    def paths(self) -> list[str]:
        return [*self.params, *self.tied]

    def tune_space(self, search: str) -> dict:
        if search == "grid":
            continuous = [p.path for p in self.params.values() if p.kind not in ("choice", "grid")]
            if continuous:
                raise ConfigError("--search", f"grid search needs grid or choice values only; {self.source} "
                                              f"has continuous {continuous}")
            return {p.path: __import__("ray").tune.grid_search(list(p.args)) for p in self.params.values()}
        return {p.path: p.tune_domain(search) for p in self.params.values()}

    def grid_size(self) -> int:
        n = 1
        for p in self.params.values():
            n *= len(p.args) if p.kind in ("choice", "grid") else 1
        return n

    def assignment(self, trial_config: dict) -> dict[str, Any]:
        """Every swept path's value for a trial (tied paths included), in space order; ``{}`` for a
        config that lacks some (a trial Tune never started)."""
        if not all(p in trial_config for p in self.params):
            return {}
        out = {p: _plain(trial_config[p]) for p in self.params}
        out.update({p: out[src] for p, src in self.tied.items()})
        return out


def _plain(v: Any) -> Any:
    """numpy scalars (Tune samples them) as Python values."""
    return v.item() if hasattr(v, "item") else v


def scalar(value: Any) -> str:
    """A value as a ``--set`` scalar that parses back to the same value (JSON is valid YAML)."""
    return value if isinstance(value, str) else json.dumps(_plain(value))


def as_overrides(values: dict[str, Any]) -> list[str]:
    return [f"{k}={scalar(v)}" for k, v in values.items()]


def load_space(path: str) -> SearchSpace:
    """Parse and check a search-space YAML file (shape only; :func:`check_space` checks it against a
    method's configuration)."""
    from raypipe.config import load_yaml

    raw = load_yaml(path)
    unknown = set(raw) - {"description", "params"}
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}", "unknown key (a space has 'description' and 'params')")
    items = raw.get("params")
    if not isinstance(items, dict) or not items:
        raise ConfigError(f"{path}: params", "must map dotted config paths to distributions")
    params: dict[str, Param] = {}
    tied: dict[str, str] = {}
    for name, spec in items.items():
        where = f"{path}: params.{name}"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(where, f"must be one of {{{', '.join(DISTRIBUTIONS + ('same_as',))}: …}}, got {spec!r}")
        (kind, args), = spec.items()
        if kind == "same_as":
            tied[name] = str(args)
            continue
        if kind not in DISTRIBUTIONS:
            raise ConfigError(where, f"unknown distribution '{kind}' (known: {', '.join(DISTRIBUTIONS)}, same_as)")
        if not isinstance(args, list) or not args:
            raise ConfigError(where, f"{kind} takes a list, got {args!r}")
        if kind in ("uniform", "loguniform", "randint", "quniform"):
            need = 3 if kind == "quniform" else 2
            if len(args) != need or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise ConfigError(where, f"{kind} takes [{'low, high, q' if need == 3 else 'low, high'}] numbers, got {args!r}")
            if not args[0] < args[1]:
                raise ConfigError(where, f"needs low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise ConfigError(where, "loguniform needs low > 0")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise ConfigError(where, "randint takes integers")
        params[name] = Param(name, kind, tuple(args))
    for name, src in tied.items():
        if src not in params:
            raise ConfigError(f"{path}: params.{name}.same_as", f"'{src}' is not a swept parameter of this space")
    return SearchSpace(params, tied, str(raw.get("description", "")), path)


def check_space(space: SearchSpace, method, config_file: str | None, overrides: list[str], extra: dict) -> None:
    """Resolve the method's configuration with each swept path at its bounds (or each choice): an
    unknown path, or a value the config rejects, fails here, naming the space file and the path."""
    from raypipe.engine import resolve

    for param in space.params.values():
        for value in param.values_to_check():
            values = {param.path: value, **{t: value for t, src in space.tied.items() if src == param.path}}
            try:
                resolve(method, config_file, [*overrides, *as_overrides(values)], extra)
            except ConfigError as exc:
                raise ConfigError(f"{space.source}: params.{param.path}",
                                  f"value {value!r} is rejected by {method.name}'s configuration: {exc}") from None
            _check_exists(method, param.path, space.source)
    for path in space.tied:
        _check_exists(method, path, space.source)


def _check_exists(method, path: str, source: str) -> None:
    """``--set`` may add keys to free-form dicts (a model spec); a sweep must name a real field."""
    import dataclasses
    import typing

    from raypipe.engine.config import config_class

    node: Any = config_class(method)
    for part in path.split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return  # inside a free-form dict (e.g. stages.x.model.width): the model check covers it
        hints = typing.get_type_hints(node)
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            raise ConfigError(f"{source}: params.{path}", f"'{part}' is not a field of {node.__name__} "
                                                          f"(fields: {', '.join(sorted(names))})")
        node = hints[part]
