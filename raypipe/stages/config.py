"""The MTTS pipeline's configuration: every knob named, with an embedded default that runs on a laptop.

Resolution order: the defaults below ← ``--config FILE.yaml`` ← ``--set key.path=value`` ← CLI flags.
The resolved config is validated once (unknown keys, types, ranges, model band counts against the
data, referenced MLflow runs) before any training starts, and logged whole to MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raypipe.config import apply_overrides, deep_merge, from_dict, load_yaml, to_dict
from raypipe.data.pipeline import DataConfig
from raypipe.errors import ConfigError


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32  # global batch: each of N workers takes batch_size // N
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9  # sgd only
    schedule: Literal["cosine", "constant"] = "cosine"
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

    def validate(self, path: str) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "must be >= 1")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"{path}.shuffle_buffer", "must be >= 0 (0 = no shuffling)")
        if self.lr <= 0:
            raise ConfigError(f"{path}.lr", "must be > 0")


@dataclass
class FilterConfig:
    """Pseudo-label filtering by the source model's logits (MTTS stage 1)."""

    enabled: bool = True
    rule: Literal["max_softmax", "margin"] = "max_softmax"
    threshold: float = 0.6
    temperature: float = 1.0
    # raypipe extension (not published): also drop samples whose cloud fraction (pipeline cloud
    # stage) exceeds this, however confident f_S is; 1.0 = off. See docs/methods.md.
    max_cloud_fraction: float = 1.0

    def validate(self, path: str) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"{path}.threshold", "must be within [0, 1]")
        if not 0.0 <= self.max_cloud_fraction <= 1.0:
            raise ConfigError(f"{path}.max_cloud_fraction", "must be within [0, 1] (1 = off)")


@dataclass
class IRMConfig:
    """Information Regulation Mechanism (see docs/methods.md for the formulas)."""

    mode: Literal["per_sample", "batch", "off"] = "per_sample"
    alpha: float = 1.0
    w_min: float = 0.1
    temperature: float = 1.0
    reference: Literal["consensus", "source"] = "consensus"
    # raypipe extension (not published): scale the optical score by the clear fraction 1 − c before
    # the ratio, so a fully cloudy tile gets w_O = w_min. See docs/methods.md.
    cloud_prior: bool = False

    def validate(self, path: str) -> None:
        if not 0.0 <= self.w_min < 0.5:
            raise ConfigError(f"{path}.w_min", "must be within [0, 0.5)")


@dataclass
class SourceStageConfig:
    """What every stage has: its model spec, its training settings, and optionally a finished MLflow
    run whose checkpoint stands in for training it."""

    model: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    from_run: str = ""


@dataclass
class AuxStageConfig(SourceStageConfig):
    filter: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class TargetStageConfig(SourceStageConfig):
    irm: IRMConfig = field(default_factory=IRMConfig)
    filter: FilterConfig = field(default_factory=lambda: FilterConfig(enabled=False))  # ablation: filter in stage 2
    temperature: float = 4.0  # KD temperature T
    lambda_src: float = 1.0  # weight of KD from f_S on the fused head
    lambda_aux: float = 1.0  # weight of the IRM-weighted KD from the auxiliary models
    lambda_uni: float = 0.5  # weight of each unimodal head's KD from its own teacher
    # "irm_opt" (raypipe extension): f_S's KD term on the fused head is weighted by IRM's w_O, since
    # f_S sees the optical input only; "none" = as published
    src_weighting: Literal["none", "irm_opt"] = "none"


@dataclass
class StagesConfig:
    source: SourceStageConfig = field(default_factory=SourceStageConfig)
    aux_optical: AuxStageConfig = field(default_factory=AuxStageConfig)
    aux_sar: AuxStageConfig = field(default_factory=AuxStageConfig)
    target: TargetStageConfig = field(default_factory=TargetStageConfig)


@dataclass
class BenchmarkConfig:
    """The generated benchmark used when no data is given (made if absent)."""

    out: str = "data/synthetic"
    tiles: int = 480  # per domain
    size: int = 32
    seed: int = 0
    preset: str = "thick"
    scene_size: int = 40


@dataclass
class DataSection:
    source_manifest: str = ""  # "" = the generated benchmark
    target_manifest: str = ""  # "" = the source manifest (a benchmark holding both domains)
    source_domain: str = "source"  # "" when the manifest holds one domain only
    target_domain: str = "target"
    train_split: str = "train"
    eval_split: str = "test"
    pipeline: DataConfig = field(default_factory=DataConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


@dataclass
class TrackingConfig:
    uri: str = ""  # "" = sqlite:///<cwd>/mlflow.db
    experiment: str = "raypipe-mtts"


@dataclass
class RayConfig:
    address: str = ""  # "" = connect to a running cluster if there is one (ray job submit), else start one
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""  # "" = <cwd>/runs/ray-train ; s3://… on a cluster
    eval_concurrency: int = 1  # batch-inference actors for evaluation


@dataclass
class MTTSConfig:
    name: str = "mtts"
    data: DataSection = field(default_factory=DataSection)
    stages: StagesConfig = field(default_factory=StagesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    force_stages: list[str] = field(default_factory=list)

    def validate(self, path: str = "") -> None:
        for s in self.force_stages:
            if s not in STAGES:
                raise ConfigError("force_stages", f"unknown stage '{s}' (stages: {list(STAGES)})")


STAGES = ("source", "aux_optical", "aux_sar", "target")

_TINY_OPTICAL = {"kind": "resnet", "depth": 18, "width": 16, "stem": "small"}
_TINY_SAR = {"kind": "resnet", "depth": 10, "width": 16, "stem": "small"}

# The embedded default: a small generated benchmark, small models, a few epochs (minutes on 2 CPUs).
DEFAULTS: dict = {
    "data": {"pipeline": {"clouds": {"mode": "auto"}}},
    "stages": {
        "source": {"model": {**_TINY_OPTICAL}},
        "aux_optical": {"model": {**_TINY_OPTICAL}},
        "aux_sar": {"model": {**_TINY_SAR}},
        "target": {"model": {"kind": "multimodal", "optical": {k: v for k, v in _TINY_OPTICAL.items() if k != "kind"},
                             "sar": {k: v for k, v in _TINY_SAR.items() if k != "kind"}}},
    },
}


def resolve(config_file: str | None = None, overrides: list[str] | None = None, extra: dict | None = None) -> MTTSConfig:
    """Defaults ← YAML file ← ``--set`` overrides ← ``extra`` (CLI flags), validated."""
    data = dict(DEFAULTS)
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
    if extra:
        data = deep_merge(data, extra)
    data = apply_overrides(data, overrides or [])
    return from_dict(MTTSConfig, data)


def as_dict(cfg: MTTSConfig) -> dict:
    return to_dict(cfg)
