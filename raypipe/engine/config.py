"""The configuration every method shares, and how a method's full configuration is resolved.

A method's configuration is one dataclass tree::

    name, data.*, stages.<stage>.*, task.*, tracking.*, ray.*, force_stages

``task`` holds the method's task settings (its task class's ``Config``: e.g. segmentation's sliding
window ``task.window``; empty for classification).

``stages.<stage>`` is the config class of that stage's objective (``Objective.Config``), so a knob
has one dotted name from YAML and ``--set`` down to the loss, and the same name in MLflow params and
Tune search spaces (e.g. ``stages.target.irm.alpha``). Resolution: the method's embedded defaults ←
``--config FILE.yaml`` ← CLI flags ← ``--set key.path=value``; every value is validated as it is
built (unknown keys, types, ranges), naming its dotted path, before any stage trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from raypipe.config import apply_overrides, deep_merge, from_dict, load_yaml
from raypipe.data.pipeline import DataConfig
from raypipe.errors import ConfigError

if TYPE_CHECKING:
    from raypipe.engine.method import Method


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32  # global batch: each of N workers takes batch_size // N
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    # cosine: annealed to 0 over the epochs; constant; step: lr × step_gamma at epoch step_start and every
    # step_every epochs after it (CloudSeg: halved every 5 epochs from epoch 10)
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    step_start: int = 10
    step_every: int = 5
    step_gamma: float = 0.5
    seed: int = 0
    amp: bool = True  # bf16 autocast on GPU (ignored on CPU)
    max_failures: int = 2  # Ray Train restarts from the latest checkpoint this many times
    teacher_outputs: Literal["in_loop", "precomputed"] = "in_loop"  # see docs/benchmarks.md for the choice
    fail_once_at_epoch: int = -1  # fault injection for recovery tests: a worker dies once at this epoch
    # Each worker shuffles its rows through a buffer of this many samples, reseeded every epoch
    # (seed, epoch, rank); 0 = rows in arrival order. Memory: rows × one sample (≈ 4 MB at 256 px S1+S2).
    shuffle_buffer: int = 64
    # Repeatable runs: Ray Data keeps the block order (preserve_order), so with one worker the same
    # seed gives the same batches and the same model. Costs some throughput; off by default.
    deterministic: bool = False
    # Which epoch's model the stage keeps, judged on the val split (DESIGN §11):
    #   last          the final epoch's (default);
    #   val_labels    best val accuracy: on the target domain this uses target labels, so every result
    #                 downstream of it is marked "oracle selection";
    #   val_objective lowest value of the stage's own objective on val (its pseudo-label or distillation
    #                 loss): label-free wherever the objective is.
    selection: Literal["last", "val_labels", "val_objective"] = "last"
    # validate (and select) every this many epochs, and always after the last one (CloudSeg: 2)
    val_every: int = 1

    def validate(self, path: str) -> None:
        for name in ("epochs", "batch_size", "val_every", "step_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "must be >= 1")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"{path}.shuffle_buffer", "must be >= 0 (0 = no shuffling)")
        if not self.lr > 0:
            raise ConfigError(f"{path}.lr", "must be > 0")
        if not self.weight_decay >= 0:
            raise ConfigError(f"{path}.weight_decay", "must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{path}.momentum", "must be within [0, 1)")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError(f"{path}.nesterov", "needs optimizer: sgd with momentum > 0")
        if self.step_start < 0:
            raise ConfigError(f"{path}.step_start", "must be >= 0")
        if not 0 < self.step_gamma <= 1:
            raise ConfigError(f"{path}.step_gamma", "must be within (0, 1]")
        if self.max_failures < -1:
            raise ConfigError(f"{path}.max_failures", "must be >= 0 (or -1 for unlimited)")


@dataclass
class StageConfig:
    """What every stage has: its model spec, its training settings, and optionally a finished MLflow
    run whose checkpoint stands in for training it. Objectives extend it with their own knobs."""

    model: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    from_run: str = ""


@dataclass
class BenchmarkConfig:
    """The generated benchmark used when no data is given (made if absent).

    ``kind``: ``sen12ms`` (the scene-classification transfer benchmark, :mod:`raypipe.synthetic`),
    ``m3m-cr`` or ``whu-opt-sar`` (segmentation, :mod:`raypipe.synthetic.segmentation`). ``tiles``
    (per domain for sen12ms), ``size`` (tile px; for whu-opt-sar the tile cut from the scenes) and
    ``scene_size`` (tiles per scene / AOI) serve sen12ms and m3m-cr; ``scenes``, ``scene_height`` and
    ``scene_width`` serve whu-opt-sar."""

    kind: Literal["sen12ms", "m3m-cr", "whu-opt-sar"] = "sen12ms"
    out: str = "data/synthetic"
    tiles: int = 480  # per domain
    size: int = 32
    seed: int = 0
    preset: str = "thick"
    scene_size: int = 40
    scenes: int = 10
    scene_height: int = 300
    scene_width: int = 400

    def validate(self, path: str) -> None:
        for name in ("tiles", "size", "scene_size", "scenes", "scene_height", "scene_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "must be >= 1")


@dataclass
class DataSection:
    source_manifest: str = ""  # "" = the generated benchmark
    target_manifest: str = ""  # "" = the source manifest (a benchmark holding both domains)
    source_domain: str = "source"  # "" when the manifest holds one domain only
    target_domain: str = "target"
    # Target (and source) data are split by scene into train / val / test (``jobs/prepare_data.py``
    # holds out val scenes from train; official test splits are kept). Per-epoch metrics and model
    # selection use val; test is evaluated once, at the end of a stage, and is what tables report.
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    pipeline: DataConfig = field(default_factory=DataConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


@dataclass
class TrackingConfig:
    uri: str = ""  # "" = sqlite:///<cwd>/mlflow.db
    experiment: str = "raypipe"  # one experiment for every method, so methods share stages by key


@dataclass
class RayConfig:
    address: str = ""  # "" = connect to a running cluster if there is one (ray job submit), else start one
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""  # "" = <cwd>/runs/ray-train ; s3://… on a cluster
    eval_concurrency: int = 1  # batch-inference actors for evaluation
    # where evaluation and teacher predictions run the model: "actors" (a Ray Data actor pool of
    # eval_concurrency, GPUs with use_gpu), "driver" (this process), or "auto": the driver on CPU-only
    # runs up to 4096 samples per split, actors otherwise (raypipe.engine.runner.inference_on)
    inference: Literal["auto", "driver", "actors"] = "auto"
    # where a stage's training loop runs: "workers" (a Ray Train worker group: DDP, restarts from the
    # latest checkpoint after a failure, resume of an interrupted run), "driver" (the loop runs in this
    # process, the driver's or a Tune trial's, without Ray Train: no worker group to start; one CPU
    # process, no restarts, checkpoints saved and resumed by a rerun), or
    # "auto": the driver for one CPU worker on a one-node cluster, workers otherwise
    # (raypipe.engine.runner.training_on)
    training: Literal["auto", "driver", "workers"] = "auto"

    def validate(self, path: str) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"{path}.num_workers", "must be >= 1")
        if self.training == "driver" and (self.num_workers != 1 or self.use_gpu):
            raise ConfigError(f"{path}.training", "'driver' runs one CPU process: it needs num_workers 1 and "
                              f"use_gpu false (got num_workers {self.num_workers}, use_gpu {self.use_gpu}); "
                              "use 'workers' or 'auto'")
        if self.eval_concurrency < 1:
            raise ConfigError(f"{path}.eval_concurrency", "must be >= 1")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"{path}.cpus_per_worker", "must be > 0")


@dataclass
class RunConfig:
    """The sections every method's configuration has; ``stages`` is added per method."""

    name: str = ""
    data: DataSection = field(default_factory=DataSection)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    force_stages: list[str] = field(default_factory=list)


_CONFIG_CLASSES: dict[str, type] = {}


def config_class(method: "Method") -> type:
    """The dataclass of ``method``'s full configuration: :class:`RunConfig` plus a ``stages`` section
    with one field per stage, typed by the stage's objective config (built once per method)."""
    ident = (method.name, tuple(s.name for s in method.stages))  # an expanded graph has its own
    if ident in _CONFIG_CLASSES:
        return _CONFIG_CLASSES[ident]
    from raypipe.engine.task import TASKS  # the task classes register themselves there

    stage_fields = [(s.name, s.objective_class().Config, field(default_factory=s.objective_class().Config))
                    for s in method.stages]
    task_config = TASKS.get(method.task, f"method {method.name} task").Config
    stages_cls = dataclasses.make_dataclass(f"{_camel(method.name)}Stages", stage_fields)
    names = tuple(s.name for s in method.stages)

    def validate(self, path: str = "") -> None:
        for s in self.force_stages:
            if s not in names:
                raise ConfigError("force_stages", f"unknown stage '{s}' (stages of {method.name}: {list(names)})")

    cls = dataclasses.make_dataclass(
        f"{_camel(method.name)}Config", [("stages", stages_cls, field(default_factory=stages_cls)),
                                         ("task", task_config, field(default_factory=task_config))],
        bases=(RunConfig,), namespace={"validate": validate, "method": method.name})
    _CONFIG_CLASSES[ident] = cls
    return cls


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def resolve(method: "Method", config_file: str | None = None, overrides: list[str] | None = None,
            extra: dict | None = None):
    """Defaults ← YAML file ← ``extra`` (CLI flags) ← ``--set`` overrides, validated, for ``method``."""
    data = deep_merge({"name": method.name}, method.defaults)
    if config_file:
        loaded = load_yaml(config_file)
        if "method" in loaded:  # a saved config (e.g. a sweep's best.yaml) may say which method it is for
            if loaded.pop("method") != method.name:
                raise ConfigError("method", f"{config_file} is a configuration for another method, not {method.name}")
        data = deep_merge(data, loaded)
    if extra:
        data = deep_merge(data, extra)
    data = apply_overrides(data, overrides or [])
    method, data = method.concrete(data)  # a graph that depends on the configuration (KDHN's rounds)
    return from_dict(config_class(method), data)
