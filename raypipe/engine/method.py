"""A method declares its stages as data; the engine (:mod:`raypipe.engine.run`) runs the graph.

    METHOD = Method(
        name="my_kd",
        description="soft-target KD from f_S into a multi-modal student (no target labels)",
        stages=(
            Stage("source", objective="supervised", inputs="optical", train=SOURCE_TRAIN,
                  evaluate={"source_test": SOURCE_TEST, "target_test": TARGET_TEST}),
            Stage("student", objective="soft_kd", inputs="both", teachers=("source",), train=TARGET_TRAIN,
                  evaluate={"target_test": TARGET_TEST}),
        ),
        defaults={"stages": {"source": {"model": ...}, "student": {"model": ...}}},
        table=(Row("source-only (f_S on target optical)", "source", "target_test"),
               Row("KD-S student", "student", "target_test")),
    )
    METHODS.register(METHOD.name, METHOD)

A stage names its objective (a registered :class:`~raypipe.engine.objective.Objective`, whose
``Config`` is the stage's config section ``stages.<name>``), the student's inputs (stated once: they
size the model and travel with its checkpoint), the earlier stages it learns from, the data it trains
on and what it is evaluated on. Nothing about a stage is written anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

from raypipe.engine.registry import OBJECTIVES
from raypipe.errors import ConfigError

INPUTS = ("optical", "sar", "both")


@dataclass(frozen=True)
class View:
    """Which samples a stage reads: a domain (``source`` / ``target``, resolved to
    ``data.source_domain`` / ``data.target_domain``), a split role (``train`` / ``val`` / ``test``,
    resolved to ``data.train_split`` / ``data.val_split`` / ``data.test_split``) and the optical acquisition (``clear`` = cloud-free,
    ``cloudy`` = the cloudy one, through the cloud stage; ``both`` = the cloudy one as ``optical`` and
    the clear one as ``optical_clear``, where the dataset has both). SAR is read when any model of
    the stage takes it."""

    domain: Literal["source", "target"]
    split: Literal["train", "val", "test"]
    optical: Literal["clear", "cloudy", "both"] = "cloudy"
    # clouds simulated on the cloud-free acquisition (``data.pipeline.clouds`` preset and coverage),
    # whatever ``clouds.mode`` says: cloudy / clear pairs from a domain that has no cloudy tiles (SPL's
    # cloud-removal training on the source domain)
    simulate: bool = False

    @property
    def clouds(self) -> bool:
        """Whether the cloud stage runs (it does on cloudy optical; clear optical is cloud-free)."""
        return self.optical != "clear"


def val_twin(prefix: str) -> str:
    """The evaluation prefix of a test view's val twin (``target_test`` -> ``target_val``), as a sweep's
    trials are evaluated (``raypipe.engine.run.evaluation_views``)."""
    return (prefix[:-5] if prefix.endswith("_test") else prefix) + "_val"


SOURCE_TRAIN = View("source", "train", "clear")
SOURCE_TEST = View("source", "test", "clear")
TARGET_TRAIN = View("target", "train", "cloudy")
TARGET_TEST = View("target", "test", "cloudy")


@dataclass(frozen=True)
class Stage:
    name: str
    objective: str  # a registered objective; its Config class is this stage's config section
    inputs: Literal["optical", "sar", "both"]  # what the student takes
    train: View  # per-epoch validation reads the same view's val split
    evaluate: dict[str, View] = field(default_factory=dict)  # result prefix -> test view (e.g. "target_test")
    teachers: tuple[str, ...] = ()  # earlier stages whose models this stage learns from (frozen)
    description: str = ""
    # the task that scores this stage per epoch and at evaluation ("" = the method's): e.g. SPL's
    # cloud-removal stage is scored as ``restoration`` inside a classification method
    task: str = ""

    def objective_class(self):
        return OBJECTIVES.get(self.objective, f"stage '{self.name}' objective")

    def __hash__(self) -> int:  # frozen dataclass with a dict field
        return hash((self.name, self.objective, self.inputs, self.train, tuple(self.evaluate), self.teachers, self.task))


@dataclass(frozen=True)
class Row:
    """One row of a method's results table: a label, a stage and one of its evaluation prefixes."""

    label: str
    stage: str
    prefix: str = "target_test"
    # uses information a real user lacks: True = target labels; a string names it (e.g. "cloud-free input");
    # marked as such wherever the row is shown
    oracle: bool | str = False


@dataclass(frozen=True)
class Method:
    name: str
    description: str  # one line, shown by ``jobs/run.py --list``
    stages: tuple[Stage, ...]
    defaults: dict = field(default_factory=dict)  # the embedded default configuration (models etc.)
    table: tuple[Row, ...] = ()
    task: str = "classification"
    experiment: str = ""  # MLflow experiment ("" = tracking.experiment's default)
    default_note: str = ""  # one line: what the embedded default configuration is (printed by jobs/run.py)
    main_stage: str = ""  # the stage a sweep optimises by default ("" = the last table row's)
    # A method whose stage graph depends on its configuration (KDHN's rounds): given the merged
    # configuration mapping, ``(the method to run, the mapping completed for its stages)``. None = the
    # graph is ``stages``. ``stages`` and ``table`` are then the graph of the embedded default.
    expand: Callable[[Mapping], tuple["Method", dict]] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.stages:
            if s.name in seen:
                raise ValueError(f"method {self.name}: stage '{s.name}' declared twice")
            if s.inputs not in INPUTS:
                raise ValueError(f"method {self.name}: stage '{s.name}' inputs {s.inputs!r} not in {INPUTS}")
            for t in s.teachers:
                if t not in seen:
                    raise ValueError(f"method {self.name}: stage '{s.name}' learns from '{t}', "
                                     f"which is not an earlier stage")
            seen.add(s.name)
        if self.main_stage and self.main_stage not in seen:
            raise ValueError(f"method {self.name}: main_stage '{self.main_stage}' is not one of its stages")
        for row in self.table:
            if row.stage not in seen:
                raise ValueError(f"method {self.name}: table row '{row.label}' names unknown stage '{row.stage}'")

    def task_of(self, stage: Stage) -> str:
        """The task that scores ``stage``: its own, else the method's."""
        return stage.task or self.task

    def concrete(self, data: Mapping) -> tuple["Method", dict]:
        """The stage graph for configuration ``data`` (a mapping, e.g. ``to_dict(cfg)``) and ``data``
        completed for it; ``(self, data)`` when the graph is fixed."""
        if self.expand is None:
            return self, dict(data)
        return self.expand(data)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError("force_stages", f"unknown stage '{name}' of {self.name}")

    def __hash__(self) -> int:
        return hash(self.name)
