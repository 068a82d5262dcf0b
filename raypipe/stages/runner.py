"""Where a stage runs: Ray Train (TorchTrainer, DDP) for training, Ray Data for batch inference.

Everything about *where* — number of workers, GPUs, storage, failure handling — is built here,
outside the training loop (:mod:`raypipe.stages.loop`).
"""

from __future__ import annotations

import copy
import os
import uuid
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raypipe import storage
from raypipe.config import to_dict
from raypipe.data.pipeline import TilePipeline, iter_unwrapped, to_torch
from raypipe.stages.config import RayConfig, TrainConfig
from raypipe.stages.loop import load_frozen, train_loop_per_worker
from raypipe.stages.objectives import student_logits


@dataclass
class StageJob:
    """One stage, resolved: what to train, on what, from which teachers."""

    name: str
    objective: dict  # {"kind": ..., "params": {...}}
    model_spec: dict
    train: TrainConfig
    train_data: TilePipeline
    eval_data: TilePipeline
    teachers: dict  # name -> {"spec": model spec, "state": state_dict}
    inputs: str  # "optical" | "sar" | "both"
    num_classes: int
    class_names: list[str]


def storage_args(storage_path: str) -> dict:
    """RunConfig storage: a local folder, or object storage through a pyarrow filesystem (no scheme)."""
    path = storage_path or os.path.join(os.getcwd(), "runs", "ray-train")
    if storage.is_local(path):
        path = storage.strip_scheme(path)
        os.makedirs(path, exist_ok=True)
        return {"storage_path": path}
    fs, p = storage.pyarrow_filesystem(path)
    return {"storage_path": p, "storage_filesystem": fs}


def ingest_config(deterministic: bool) -> ray.train.DataConfig:
    """How Ray Train feeds the workers: Ray Train's defaults, plus ``preserve_order`` (blocks reach the
    training loop in manifest order) when the run must be repeatable."""
    if not deterministic:
        return ray.train.DataConfig()
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options={"train": options, "eval": copy.deepcopy(options)})


def _join_logits(batch: dict, table_ref, names: tuple[str, ...]) -> dict:
    """Ray Data map: attach precomputed teacher logits (``logits/<name>``) to rows by sample id."""
    key = table_ref[0].hex()
    if key not in _TABLES:  # fetched once per worker process
        _TABLES.clear()
        _TABLES[key] = ray.get(table_ref[0])
    table = _TABLES[key]
    index = table["index"]
    rows = np.array([index[s] for s in batch["sample_id"]], dtype=np.int64)
    for name in names:
        batch[f"logits/{name}"] = table[name][rows]
    return batch


_TABLES: dict = {}


def precompute_teachers(job: StageJob, ray_cfg: RayConfig):
    """Teacher logits over the training split, once, by Ray Data batch inference (actor pools, GPUs
    when asked), joined to the training rows: the training loop then runs no teacher forward pass."""
    from raypipe.stages.objectives import TEACHER_INPUTS

    table: dict = {}
    for name, t in job.teachers.items():
        out = predict(job.train_data, t["spec"], t["state"], TEACHER_INPUTS[name], ray_cfg.eval_concurrency,
                      ray_cfg.use_gpu)
        if "index" not in table:
            table["index"] = {sid: i for i, sid in enumerate(out["sample_id"])}
            table["sample_id"] = out["sample_id"]
        elif not np.array_equal(table["sample_id"], out["sample_id"]):
            raise RuntimeError("teacher predictions cover different samples")
        table[name] = out["logits"].astype(np.float32)
    ref = [ray.put(table)]  # wrapped in a list so Ray passes the reference, not the value
    return job.train_data.dataset().map_batches(_join_logits, fn_kwargs={"table_ref": ref,
                                                                         "names": tuple(job.teachers)},
                                                batch_format="numpy", batch_size=None)


def fit(job: StageJob, ray_cfg: RayConfig, run_name: str, run_handle=None) -> tuple[dict, dict]:
    """Train ``job`` with Ray Train; returns (final state_dict, last reported metrics).

    ``train.teacher_outputs``: ``in_loop`` (each worker runs the frozen teachers on its batches) or
    ``precomputed`` (:func:`precompute_teachers`). Re-running with the same ``run_name`` and storage
    resumes from the run's latest checkpoint."""
    train_ds = job.train_data.dataset()
    teachers = {n: {"spec": t["spec"], "state": ray.put(t["state"])} for n, t in job.teachers.items()}
    if job.train.teacher_outputs == "precomputed" and job.teachers:
        train_ds = precompute_teachers(job, ray_cfg)
        teachers = {}  # the logits travel with the rows; workers load no teacher
    store = storage_args(ray_cfg.storage_path)
    marker_dir = store["storage_path"] if "storage_filesystem" not in store else "/tmp"
    config = {
        "objective": job.objective, "model_spec": job.model_spec, "train": to_dict(job.train),
        "teachers": teachers, "num_classes": job.num_classes, "class_names": job.class_names,
        "run_handle": run_handle, "fail_marker": os.path.join(marker_dir, f"{run_name}.failed-once"),
    }
    resources = {"CPU": ray_cfg.cpus_per_worker}
    if ray_cfg.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_name, failure_config=FailureConfig(max_failures=job.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), **store),
        datasets={"train": train_ds, "eval": job.eval_data.dataset()},
        dataset_config=ingest_config(job.train.deterministic),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
    return state["model"], dict(result.metrics or {})


class _Predictor:
    """Ray Data batch-inference actor: loads a model once, predicts every batch it is given."""

    def __init__(self, spec: dict, state_ref, inputs: str):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
        self.model = load_frozen({"spec": spec, "state": state_ref}, device)
        self.inputs = inputs

    def __call__(self, batch: dict) -> dict:
        tensors = to_torch(batch, self.device)
        with torch.no_grad():
            out = student_logits(self.model, tensors, self.inputs)
            logits = (out.fused if hasattr(out, "fused") else out).float().cpu().numpy()
        return {"sample_id": batch["sample_id"], "logits": logits, "pred": logits.argmax(1),
                "label": batch["label"], "cloud_fraction": batch["cloud_fraction"]}


def predict(pipe: TilePipeline, spec: dict, state: dict, inputs: str, concurrency: int = 1,
            use_gpu: bool = False, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Batch inference over a pipeline with an actor pool (GPUs when asked); arrays sorted by sample id."""
    ds = pipe.dataset().map_batches(
        _Predictor, fn_constructor_kwargs={"spec": spec, "state_ref": ray.put(state), "inputs": inputs},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=1 if use_gpu else 0)
    parts = list(iter_unwrapped(ds.iter_batches(batch_size=None, batch_format="numpy")))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if out:
        order = np.argsort(out["sample_id"])
        out = {k: v[order] for k, v in out.items()}
    return out


def unique_suffix() -> str:
    return uuid.uuid4().hex[:6]
