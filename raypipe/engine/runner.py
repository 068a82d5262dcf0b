"""Where a stage runs: Ray Train (TorchTrainer, DDP) for training, Ray Data for batch inference.

Everything about *where* — number of workers, GPUs, storage, failure handling — is built here,
outside the training loop (:mod:`raypipe.engine.loop`).
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
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
from raypipe.errors import ConfigError, StorageError
from raypipe.tracking.checkpoints import atomic_write, load_state_file


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


def storage_root(storage_path: str) -> str:
    """Where a stage's training runs keep their checkpoints: ``ray.storage_path``, else <cwd>/runs/ray-train."""
    return storage_path or os.path.join(os.getcwd(), "runs", "ray-train")


def storage_args(storage_path: str) -> dict:
    """RunConfig storage: a local folder, or object storage through a pyarrow filesystem (no scheme)."""
    path = storage_root(storage_path)
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
    in_process = training_on(ray_cfg, job.train) == "driver"
    progress = _Progress(on_epoch) if on_epoch and not in_process else None
    config = {
        "objective": job.objective, "model_spec": job.model_spec, "train": job.train, "task": job.task,
        "task_config": job.task_config,
        "teachers": teachers, "num_classes": job.num_classes, "class_names": job.class_names,
        "run_handle": run_handle, "progress": progress.queue if progress else None,
        "fail_marker": os.path.join(marker_dir, f"{run_name}.failed-once"),
    }
    if in_process:  # no worker group, no controller: the loop runs here, and what they do is done here
        config["progress"] = _InProcessProgress(on_epoch) if on_epoch else None
        reports = _InProcessRun(ray_cfg.storage_path, run_name, callbacks or [])
        config.update({"in_process": True, "session": DriverSession({"train": train_ds, "val": val_ds}, run_name, reports)})
        if job.train.deterministic:  # what ingest_config's preserve_order does for a worker group
            for ds in (train_ds, val_ds):
                ds.context.execution_options.preserve_order = True
        return _fit_in_process(job, ray_cfg, config, reports)
    resources = {"CPU": ray_cfg.cpus_per_worker}
    if ray_cfg.use_gpu:
        resources["GPU"] = 1
    scaling = ScalingConfig(num_workers=ray_cfg.num_workers, use_gpu=ray_cfg.use_gpu, resources_per_worker=resources)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling,
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
    return _selected(job, state), dict(result.metrics or {})


def _selected(job: StageJob, state: dict) -> dict:
    return state["best"]["model"] if job.train.selection != "last" and state.get("best") else state["model"]


def _fit_in_process(job: StageJob, ray_cfg: RayConfig, config: dict, reports: "_InProcessRun") -> tuple[dict, dict]:
    """The loop in this process (the driver, or a Tune trial's), with the CPUs a worker would hold
    (Ray sets a worker's OMP_NUM_THREADS the same way); it returns its final state."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(ray_cfg.cpus_per_worker)))
    try:
        state = train_loop_per_worker(config)
    except Exception as exc:  # a Ray Data task's error arrives wrapped: raypipe's own, naming the file
        cause = raypipe_cause(exc)
        if cause is not None and cause is not exc:
            raise cause from exc
        raise
    finally:
        torch.set_num_threads(threads)
    return _selected(job, state), dict(reports.last_metrics)


class _DriverContext:
    def __init__(self, run_name: str):
        self.run_name = run_name

    def get_world_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1

    def get_experiment_name(self) -> str:
        return self.run_name


class DriverSession:
    """The loop's session for a run in this process (:class:`raypipe.engine.loop.RayTrainSession`'s
    questions, answered without Ray Train): rank 0 of 1 on the CPU, the model as it is, the datasets
    whole, the latest checkpoint this run saved in storage, and each report to ``reports``."""

    def __init__(self, datasets: dict, run_name: str, reports: "_InProcessRun"):
        self.datasets, self.run_name, self.reports = datasets, run_name, reports

    def context(self) -> _DriverContext:
        return _DriverContext(self.run_name)

    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare_model(self, model):
        return model

    def checkpoint(self):
        return self.reports.latest()

    def dataset_shard(self, name: str):
        return self.datasets[name]  # a Dataset iterates like a worker's shard (iter_torch_batches)

    def report(self, metrics: dict, directory: str | None) -> None:
        self.reports(metrics, directory)


def training_on(ray_cfg: RayConfig, train: TrainConfig) -> str:
    """``driver`` or ``workers``: where :func:`fit` runs the training loop for ``ray.training``.

    ``auto`` picks this process (the driver, or a Ray Tune trial's process; :class:`DriverSession`,
    without Ray Train) for one CPU worker on a one-node cluster: the worker group's start and tear-down
    (a controller process, a placement group, a worker process that imports torch) cost more than a
    small stage's training there, and one process has nothing to synchronise. More workers, GPUs, a
    multi-node cluster or fault injection get the worker group, with its restarts from the latest
    checkpoint."""
    if ray_cfg.training == "driver" and train.fail_once_at_epoch >= 0:
        raise ConfigError("ray.training", "fault injection (train.fail_once_at_epoch) needs 'workers': "
                          "a failure in the driver process ends the job")
    if ray_cfg.training != "auto":
        return ray_cfg.training
    if ray_cfg.num_workers != 1 or ray_cfg.use_gpu or train.fail_once_at_epoch >= 0:
        return "workers"
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return "driver" if len(alive) <= 1 else "workers"


class _InProcessProgress:
    """The rank-0 loop's epoch reports, straight to ``on_epoch`` (in-process training: no queue actor)."""

    def __init__(self, on_epoch: Callable[[dict], None]):
        self.on_epoch = on_epoch

    def put_nowait(self, item: dict) -> None:
        try:
            self.on_epoch(item)
        except Exception:  # progress printing must never break a stage
            pass


class _InProcessRun:
    """What Ray Train's controller does for a worker group, for an in-process run: each reported
    checkpoint persisted under the run's folder in storage (``<storage>/<run name>/checkpoint_epoch_<n>/
    state.pt``, the newest ``keep`` kept), the latest found again when the same run name is trained
    again (a driver that died inside the stage), and the user callbacks called after each report."""

    PREFIX = "checkpoint_epoch_"

    def __init__(self, storage_path: str, run_name: str, callbacks: list, keep: int = 2):
        self.root = storage.join(storage_root(storage_path), run_name)
        self.callbacks, self.keep = callbacks, keep
        self.last_metrics: dict = {}

    def _saved(self) -> list[tuple[int, str]]:
        """(epoch, folder) of every complete checkpoint, oldest first."""
        try:
            files = storage.list_files(self.root)
        except StorageError:  # no folder yet: nothing saved
            return []
        out = []
        for f in files:
            folder, name = f.rsplit("/", 1)
            tail = folder.rsplit("/", 1)[-1]
            if name == "state.pt" and tail.startswith(self.PREFIX) and tail[len(self.PREFIX):].isdigit():
                out.append((int(tail[len(self.PREFIX):]), folder))
        return sorted(out)

    def latest(self):
        """The newest saved checkpoint as a ``ray.train.Checkpoint``, or None."""
        saved = self._saved()
        if not saved:
            return None
        folder = saved[-1][1]
        if storage.is_local(folder):
            return ray.train.Checkpoint.from_directory(storage.strip_scheme(folder))
        fs, path = storage.pyarrow_filesystem(folder)
        return ray.train.Checkpoint(path=path, filesystem=fs)

    def __call__(self, metrics: dict, local_dir: str) -> None:
        self.last_metrics = dict(metrics)
        epoch = int(metrics["epoch"])
        target = storage.join(self.root, f"{self.PREFIX}{epoch:06d}", "state.pt")
        source = os.path.join(local_dir, "state.pt")
        if storage.is_local(target):  # all or nothing, as the loop wrote it
            path = storage.strip_scheme(target)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, functools.partial(_copy_file, source), self.root)
        else:  # an object PUT is atomic
            with open(source, "rb") as f:
                storage.write_bytes(target, f.read())
        for _, folder in self._saved()[:-self.keep]:
            fs, path = storage.filesystem(folder)
            try:
                fs.rm(path, recursive=True)
            except Exception:  # an old checkpoint left behind is harmless; the newest is in place
                pass
        for cb in self.callbacks:
            cb.after_report(run_context=None, metrics=[dict(metrics)], checkpoint=None)


def _copy_file(source: str, dest) -> None:
    with open(source, "rb") as f:
        shutil.copyfileobj(f, dest)


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
