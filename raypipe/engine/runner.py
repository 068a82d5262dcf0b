"""Where a stage runs: Ray Train (TorchTrainer, DDP) for training, Ray Data for batch inference.

Everything about *where* — number of workers, GPUs, storage, failure handling — is built here,
outside the training loop (:mod:`raypipe.engine.loop`).
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import ray
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raypipe import storage
from raypipe.data.pipeline import TilePipeline, iter_unwrapped, to_torch, unwrap_error
from raypipe.engine.config import RayConfig, TrainConfig
from raypipe.engine.loop import load_frozen, train_loop_per_worker
from raypipe.engine.task import build_task
from raypipe.tracking.checkpoints import load_state_file


@dataclass
class StageJob:
    """One stage, resolved: what to train, on what, from which teachers."""

    name: str
    objective: Any  # an Objective instance, validated on the driver
    model_spec: dict
    train: TrainConfig
    train_data: TilePipeline
    val_data: TilePipeline
    teachers: dict  # name -> {"spec": model spec, "state": state_dict, "inputs": "optical"|"sar"|"both"}
    task: str
    num_classes: int
    class_names: list[str]
    task_config: Any = None  # the task's settings (e.g. segmentation's sliding window)


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
    return ray.train.DataConfig(execution_options={"train": options, "val": copy.deepcopy(options)})


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


def precompute_teachers(job: StageJob, ray_cfg: RayConfig, pipe: TilePipeline):
    """Teacher logits over a split (training or val), once, by Ray Data batch inference (actor pools,
    GPUs when asked), joined to its rows: the training loop then runs no teacher forward pass."""
    table: dict = {}
    for name, t in job.teachers.items():
        out = predict(pipe, t["spec"], t["state"], t["inputs"], job.task, job.num_classes,
                      ray_cfg.eval_concurrency, ray_cfg.use_gpu, where=ray_cfg.inference, task_config=job.task_config)
        if "index" not in table:
            table["index"] = {sid: i for i, sid in enumerate(out["sample_id"])}
            table["sample_id"] = out["sample_id"]
        elif not np.array_equal(table["sample_id"], out["sample_id"]):
            raise RuntimeError("teacher predictions cover different samples")
        table[name] = out["logits"].astype(np.float32)
    ref = [ray.put(table)]  # wrapped in a list so Ray passes the reference, not the value
    return pipe.dataset().map_batches(_join_logits, fn_kwargs={"table_ref": ref,
                                                                         "names": tuple(job.teachers)},
                                                batch_format="numpy", batch_size=None)


def fit(job: StageJob, ray_cfg: RayConfig, run_name: str, run_handle=None,
        on_epoch: Callable[[dict], None] | None = None, callbacks: list | None = None) -> tuple[dict, dict]:
    """Train ``job`` with Ray Train; returns (the selected model's state_dict, last reported metrics):
    the final epoch's model with ``train.selection: last``, else the best on val by that criterion
    (``selection/epoch`` in the metrics says which epoch).

    ``train.teacher_outputs``: ``in_loop`` (each worker runs the frozen teachers on its batches) or
    ``precomputed`` (:func:`precompute_teachers`). Re-running with the same ``run_name`` and storage
    resumes from the run's latest checkpoint. ``on_epoch`` is called on the driver with each epoch's
    metrics as the rank-0 worker reports them (console progress). ``callbacks`` are Ray Train
    ``UserCallback``s (a sweep's trial passes Tune's ``TuneReportCallback``: per-epoch val metrics
    reach Tune's scheduler)."""
    train_ds, val_ds = job.train_data.dataset(), job.val_data.dataset()
    teachers = {n: {"spec": t["spec"], "state": ray.put(t["state"]), "inputs": t["inputs"]}
                for n, t in job.teachers.items()}
    if job.train.teacher_outputs == "precomputed" and job.teachers:
        train_ds = precompute_teachers(job, ray_cfg, job.train_data)
        if job.train.selection == "val_objective":
            val_ds = precompute_teachers(job, ray_cfg, job.val_data)
        teachers = {}  # the logits travel with the rows; workers load no teacher
    store = storage_args(ray_cfg.storage_path)
    marker_dir = store["storage_path"] if "storage_filesystem" not in store else "/tmp"
    progress = _Progress(on_epoch) if on_epoch else None
    config = {
        "objective": job.objective, "model_spec": job.model_spec, "train": job.train, "task": job.task,
        "task_config": job.task_config,
        "teachers": teachers, "num_classes": job.num_classes, "class_names": job.class_names,
        "run_handle": run_handle, "progress": progress.queue if progress else None,
        "fail_marker": os.path.join(marker_dir, f"{run_name}.failed-once"),
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
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks or None,
                             **store),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=ingest_config(job.train.deterministic),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train wraps a worker's error: give the user raypipe's own, naming the file
        cause = raypipe_cause(exc)
        if cause is not None:
            raise cause from exc
        raise
    finally:
        if progress:
            progress.close()
    with result.checkpoint.as_directory() as d:
        state = load_state_file(os.path.join(d, "state.pt"), run_name, "cpu", field="ray.storage_path",
                                shown_as=f"{result.checkpoint.path}/state.pt")
    selected = state["best"]["model"] if job.train.selection != "last" and state.get("best") else state["model"]
    return selected, dict(result.metrics or {})


def raypipe_cause(exc: BaseException):
    """The :class:`~raypipe.errors.RaypipeError` a training worker raised, if ``exc`` (Ray Train's
    ``WorkerGroupError``, Ray's task errors) wraps one; else None."""
    from raypipe.errors import RaypipeError

    for err in [*(getattr(exc, "worker_failures", None) or {}).values(), exc]:
        found = unwrap_error(err)
        if isinstance(found, RaypipeError):
            return found
    return None


class _Progress:
    """Epoch reports from the rank-0 worker to the driver, through a Ray queue drained by a thread."""

    def __init__(self, on_epoch: Callable[[dict], None]):
        from ray.util.queue import Queue

        from raypipe.data.quarantine import on_driver_node

        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": on_driver_node()})
        self.on_epoch = on_epoch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception:  # the queue actor is gone (shutdown)
                return
            try:
                self.on_epoch(item)
            except Exception:  # progress printing must never break a stage
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.queue.shutdown()
        except Exception:
            pass


class _Predictor:
    """Ray Data batch-inference actor: loads a model once, predicts every batch it is given."""

    def __init__(self, spec: dict, state_ref, inputs: str, task: str, num_classes: int, task_config=None):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_frozen({"spec": spec, "state": state_ref}, self.device)
        self.inputs = inputs
        self.task = build_task(task, num_classes, config=task_config)

    def __call__(self, batch: dict) -> dict:
        tensors = to_torch(batch, self.device)
        with torch.no_grad():
            out = self.task.infer(self.model, tensors, self.inputs)
        return self.task.inference_columns(out, batch)


# ``ray.inference: auto`` runs the model in the driver process up to this many samples (CPU only):
# an actor pool costs a new process (torch imported, model loaded: ~5 s on 2 cores) per call, more
# than a CPU forward pass over a few thousand small tiles; beyond it, or on GPUs, actors scale out.
DRIVER_INFERENCE_MAX_SAMPLES = 4096


def inference_on(where: str, use_gpu: bool, samples: int) -> str:
    """``driver`` or ``actors``: where :func:`predict` runs the model for ``ray.inference``."""
    if where != "auto":
        return where
    return "actors" if use_gpu or samples > DRIVER_INFERENCE_MAX_SAMPLES else "driver"


def predict(pipe: TilePipeline, spec: dict, state: dict, inputs: str, task: str = "classification",
            num_classes: int | None = None, concurrency: int = 1, use_gpu: bool = False,
            batch_size: int = 64, where: str = "auto", task_config=None) -> dict[str, np.ndarray]:
    """Batch inference over a pipeline; arrays sorted by sample id. Tiles are decoded by Ray Data
    tasks either way; the model runs in an actor pool (GPUs when asked) or, ``where="driver"`` (and
    ``auto`` for small CPU runs, :func:`inference_on`), in this process."""
    num_classes = num_classes or spec.get("num_classes") or len(pipe.classes)
    if inference_on(where, use_gpu, len(pipe.frame)) == "driver":
        predictor = _Predictor(spec, state, inputs, task, num_classes, task_config)
        parts = [predictor(b) for b in pipe.iter_batches(batch_size=batch_size)]
    else:
        ds = pipe.dataset().map_batches(
            _Predictor, fn_constructor_kwargs={"spec": spec, "state_ref": ray.put(state), "inputs": inputs,
                                               "task": task, "num_classes": num_classes, "task_config": task_config},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_gpus=1 if use_gpu else 0)
        parts = list(iter_unwrapped(ds.iter_batches(batch_size=None, batch_format="numpy")))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if out:
        order = np.argsort(out["sample_id"])
        out = {k: v[order] for k, v in out.items()}
    return out
