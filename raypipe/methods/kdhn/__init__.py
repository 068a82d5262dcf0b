"""KDHN (GRSL 2021, 10.1109/LGRS.2021.3116601; paper only, the MTTS authors' earlier method):
knowledge distillation between heterogeneous networks with logit-filtered pseudo labels, propagated
recursively over rounds.

Round 1: the teacher is f_S (an optical ResNet-18 on cloud-free source tiles); the student, an optical +
SAR network of another architecture (ResNet-18 optical + ResNet-10 SAR branches, concat fusion),
learns f_S's pseudo labels on the target training split where f_S's logits pass the filter (the MTTS
stage-1 filter: ``filter.rule``, ``filter.threshold``, …). Round r + 1: the teacher is round r's
student (now reading optical + SAR), the student a fresh network of the same kind, trained the same
way on its teacher's filtered pseudo labels.

``stages.student.rounds`` (default 2) sets the number of rounds. The stages are ``round_1`` …
``round_{R-1}`` and ``student`` (the last round, the one the table and sweeps report). Every round's
section starts from ``stages.student`` (model, train, filter), so ``--set stages.student.filter.threshold=0.8``
sets every round; ``stages.round_1.…`` sets one round only. A round is reused by its stage key: going
from 2 to 3 rounds retrains only the new ones. raypipe's choices where the paper is silent:
docs/methods.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

from raypipe.config import deep_merge
from raypipe.engine.method import TARGET_TEST, TARGET_TRAIN, Method, Row, Stage
from raypipe.engine.registry import METHODS, OBJECTIVES
from raypipe.errors import ConfigError
from raypipe.methods.common import DATA_DEFAULTS, SOURCE, SOURCE_DEFAULTS, SOURCE_ROW, TINY_MULTIMODAL
from raypipe.objectives.pseudo_label import PseudoLabel, PseudoLabelConfig

DEFAULT_ROUNDS = 2
LAST = "student"


@dataclass
class KDHNConfig(PseudoLabelConfig):
    # number of teacher -> student rounds (round r + 1 learns from round r); checked by ``expand``, which
    # reads it to build the graph before the configuration is validated
    rounds: int = DEFAULT_ROUNDS


@OBJECTIVES.register("kdhn")
class KDHNRound(PseudoLabel):
    """The last round: the ``pseudo_label`` loss, with ``rounds`` in its section."""

    Config = KDHNConfig


def round_names(rounds: int) -> list[str]:
    return [f"round_{r}" for r in range(1, rounds)] + [LAST]


def _rounds(data: Mapping) -> int:
    value = data.get("stages", {}).get(LAST, {}).get("rounds", DEFAULT_ROUNDS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"stages.{LAST}.rounds", f"must be an integer >= 1, got {value!r}")
    return value


def expand(data: Mapping) -> tuple[Method, dict]:
    """The graph for ``stages.student.rounds`` and every earlier round's section completed from
    ``stages.student`` (without ``rounds``, so a round's stage key does not depend on how many follow)."""
    rounds = _rounds(data)
    data = copy.deepcopy(dict(data))
    stages_cfg = data.setdefault("stages", {})
    template = {k: v for k, v in stages_cfg.get(LAST, {}).items() if k not in ("rounds", "from_run")}
    names = round_names(rounds)
    for name in names[:-1]:
        given = stages_cfg.get(name, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"stages.{name}", "must be a mapping")
        stages_cfg[name] = deep_merge(template, given)
    for key in list(stages_cfg):
        if key.startswith("round_") and key not in names:
            raise ConfigError(f"stages.{key}", f"there are {rounds} rounds (stages.{LAST}.rounds): "
                              f"the rounds before the last are {names[:-1] or 'none'}")
    return _method(rounds), data


def _method(rounds: int) -> Method:
    names = round_names(rounds)
    stages, teacher = [SOURCE], "source"
    for r, name in enumerate(names, 1):
        stages.append(Stage(name, objective="kdhn" if name == LAST else "pseudo_label", inputs="both",
                            teachers=(teacher,), train=TARGET_TRAIN, evaluate={"target_test": TARGET_TEST},
                            description=f"round {r} of {rounds}: {teacher}'s filtered pseudo labels"))
        teacher = name
    rows = [Row(f"KDHN round {r} student (optical + SAR)", n) for r, n in enumerate(names[:-1], 1)]
    return Method(
        name="kdhn",
        description="KDHN: heterogeneous teacher -> student rounds on filtered pseudo labels (round r+1 learns from round r)",
        stages=tuple(stages),
        defaults={"data": DATA_DEFAULTS, "stages": {"source": SOURCE_DEFAULTS, LAST: {"model": dict(TINY_MULTIMODAL)}}},
        table=(SOURCE_ROW, *rows, Row(f"KDHN student, round {rounds} (optical + SAR)", LAST)),
        main_stage=LAST,
        expand=expand,
    )


METHOD = _method(DEFAULT_ROUNDS)
METHODS.register(METHOD.name, METHOD)

__all__ = ["METHOD", "KDHNConfig", "expand", "round_names"]
