"""The one training loop every stage runs on each Ray Train worker. It reads top to bottom:
config → model → teachers → optimisers → resume → epochs of (train, validate, select, checkpoint, report).

Where it runs (how many workers, GPUs, storage, failures) is decided outside, in
:mod:`raypipe.engine.runner`; the same loop runs on a laptop and on a cluster. What it optimises is
the stage's objective (:mod:`raypipe.engine.objective`); what it measures is the task's
(:mod:`raypipe.engine.task`).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from raypipe.data.pipeline import to_torch
from raypipe.engine.task import build_task
from raypipe.models import build_model
from raypipe.tracking.checkpoints import atomic_write, load_state_file


def train_loop_per_worker(config: dict) -> dict | None:
    # --- configuration --------------------------------------------------------------------------
    train = config["train"]  # the stage's TrainConfig
    objective = config["objective"]  # built and validated on the driver
    task = build_task(config["task"], config["num_classes"], config["class_names"], config.get("task_config"))
    session = config.get("session") or RayTrainSession()  # a worker group's, or a driver-side run's
    ctx = session.context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = session.device()
    torch.manual_seed(train.seed)
    np.random.seed(train.seed)
    per_worker_batch = max(1, train.batch_size // world)
    use_amp = train.amp and device.type == "cuda"

    # --- model (DDP) and frozen teachers ---------------------------------------------------------
    model = build_model(config["model_spec"])
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # global-batch statistics across GPUs
    model = session.prepare_model(model)
    teachers = {name: load_frozen(t, device) for name, t in config["teachers"].items()}

    # --- optimisers and schedules ----------------------------------------------------------------
    optimizers = objective.configure_optimizers(model, train)
    schedulers = {name: make_scheduler(opt, train) for name, opt in optimizers.items()}

    # --- resume from the latest checkpoint (after a failure, or a re-run of the same run name) ----
    start_epoch, best = 0, None  # best: the selected model so far, {"score", "epoch", "model"}
    checkpoint = session.checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            # a truncated/corrupt state.pt: an error naming the checkpoint, never a silent restart
            state = load_state_file(os.path.join(d, "state.pt"), ctx.get_experiment_name(), device,
                                    field="ray.storage_path", shown_as=f"{checkpoint.path}/state.pt")
        unwrap(model).load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            schedulers[name].load_state_dict(state["schedulers"][name])
        start_epoch, best = state["epoch"] + 1, state.get("best")

    collate = functools.partial(to_torch, device=device)
    train_shard = session.dataset_shard("train")
    val_shard = session.dataset_shard("val")
    run, progress = config.get("run_handle"), config.get("progress")

    for epoch in range(start_epoch, train.epochs):
        # --- train one epoch ---------------------------------------------------------------------
        model.train()
        objective.start_epoch(epoch, train.epochs)
        t0, seen, sums, data_wait = time.perf_counter(), 0, {}, 0.0
        batches = train_shard.iter_torch_batches(batch_size=per_worker_batch, collate_fn=collate, drop_last=True,
                                                 local_shuffle_buffer_size=train.shuffle_buffer or None,
                                                 local_shuffle_seed=shuffle_seed(train.seed, epoch, rank))
        t_wait = time.perf_counter()
        for batch in batches:
            data_wait += time.perf_counter() - t_wait
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                losses, parts = objective.loss(model, teachers, batch)
            loss = train_step(objective, model, optimizers, losses)
            maybe_inject_failure(config, epoch, rank)
            n = len(batch["sample_id"])
            seen += n
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            t_wait = time.perf_counter()
        for scheduler in schedulers.values():
            scheduler.step()
        train_time = time.perf_counter() - t0

        # --- validate on this worker's share of the val split, then all-reduce ------------------
        # (every train.val_every epochs and after the last one)
        metrics = {f"train/{k}": v / max(seen, 1) for k, v in sums.items()}
        validated = (epoch + 1) % train.val_every == 0 or epoch + 1 == train.epochs
        if validated:
            acc, val_loss = validate_shard(model, val_shard, task, objective, teachers, collate,
                                           with_loss=train.selection == "val_objective")
            if world > 1:
                acc = acc.all_reduce()
                if val_loss is not None:
                    val_loss = all_reduce_mean(val_loss, device)
            epoch_metrics = task.epoch_metrics(acc.result())
            metrics.update({f"val/{k}": v for k, v in epoch_metrics.items()})
            if val_loss is not None:
                metrics["val/objective"] = val_loss

        # --- model selection on val (train.selection; "last" keeps the final epoch's model) ---------
        if train.selection != "last" and validated:
            score = epoch_metrics[task.selection_metric] if train.selection == "val_labels" else -val_loss
            if best is None or score > best["score"]:
                best = {"score": score, "epoch": epoch,
                        "model": {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}}
        if best is not None:
            metrics.update({"selection/epoch": best["epoch"], "selection/score": best["score"]})
        metrics.update({"epoch": epoch, "start_epoch": start_epoch, "train/samples": seen * world,
                        "train/samples_per_s": seen * world / train_time, "train/epoch_s": train_time,
                        "train/data_wait_fraction": data_wait / max(train_time, 1e-9),
                        "lr": next(iter(schedulers.values())).get_last_lr()[0],
                        "ddp/param_spread": parameter_spread(model, world)})

        # --- checkpoint (rank 0 writes) and report ------------------------------------------------
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                # all or nothing (temp file, fsync, rename): a full disk raises a CheckpointError
                # naming the file, and the last reported checkpoint stays the one to resume from
                state = {"model": unwrap(model).state_dict(),
                         "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                         "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
                         "epoch": epoch, "best": best}
                atomic_write(os.path.join(d, "state.pt"), lambda f: torch.save(state, f),
                             ctx.get_experiment_name())
                if run is not None:
                    run.log_metrics(metrics, step=epoch)
                if progress is not None:
                    progress.put_nowait({**metrics, "epoch": epoch + 1, "epochs": train.epochs})
            session.report(metrics, d if rank == 0 else None)

    # the final state, for a driver-side run (a worker group's is in its last checkpoint)
    if not config.get("in_process"):
        return None
    return {"model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}, "best": best}


class RayTrainSession:
    """What the loop asks of its session, from Ray Train (a worker group's worker). A driver-side run
    (:class:`raypipe.engine.runner.DriverSession`) answers the same questions without Ray Train."""

    def context(self):
        return ray.train.get_context()  # get_world_rank(), get_world_size(), get_experiment_name()

    def device(self) -> torch.device:
        return ray.train.torch.get_device()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(model)  # DDP across the group, moved to the device

    def checkpoint(self):
        return ray.train.get_checkpoint()  # the latest after a restart, else None

    def dataset_shard(self, name: str):
        return ray.train.get_dataset_shard(name)

    def report(self, metrics: dict, directory: str | None) -> None:
        """Report an epoch: ``directory`` holds rank 0's ``state.pt`` (None on the other ranks)."""
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)


def train_step(objective, model: nn.Module, optimizers: dict, losses) -> torch.Tensor:
    """One optimisation step per optimiser, in declaration order: zero_grad → backward →
    ``objective.after_backward`` → step. ``losses`` is one tensor (one optimiser) or
    ``{optimiser name: loss}``. Returns the detached sum of the losses."""
    if not isinstance(losses, dict):
        if len(optimizers) != 1:
            raise ValueError(f"the objective returned one loss for {len(optimizers)} optimisers {list(optimizers)}")
        losses = {next(iter(optimizers)): losses}
    missing = set(optimizers) - set(losses)
    if missing:
        raise ValueError(f"the objective returned no loss for optimisers {sorted(missing)}")
    names = list(optimizers)
    for i, name in enumerate(names):
        optimizers[name].zero_grad(set_to_none=True)
        losses[name].backward(retain_graph=i < len(names) - 1)
        objective.after_backward(model, name)
        optimizers[name].step()
    return sum(v.detach().float() for v in losses.values())


def make_scheduler(optimizer, train):
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs)
    if train.schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
            step_factor, start=train.step_start, every=train.step_every, gamma=train.step_gamma))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def step_factor(epoch: int, start: int, every: int, gamma: float) -> float:
    """The ``step`` schedule's lr factor for an epoch (0-based): 1 before ``start``, then ``gamma`` more
    at ``start`` and every ``every`` epochs after it (start 10, every 5, gamma 0.5: ×0.5 from epoch 10,
    ×0.25 from 15, …)."""
    return 1.0 if epoch < start else gamma ** ((epoch - start) // every + 1)


def shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """A different, repeatable shuffle per (seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**31


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def load_frozen(teacher: dict, device) -> nn.Module:
    """A teacher from its spec and state (an object-store reference), frozen, in eval mode."""
    state = teacher["state"]
    if isinstance(state, ray.ObjectRef):
        state = ray.get(state)
    model = build_model(teacher["spec"])
    model.load_state_dict(state)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def validate_shard(model, shard, task, objective, teachers, collate, with_loss: bool = False):
    """The task's accumulator over this worker's val shard and, when asked, the mean of the
    objective's own loss there (label-free for every objective that uses no labels: the
    ``val_objective`` selection criterion)."""
    model.eval()
    acc = task.accumulator()
    loss_sum, n = 0.0, 0
    for batch in shard.iter_torch_batches(batch_size=64, collate_fn=collate):
        acc.update(task.predict(task.infer(model, batch, objective.inputs)), batch)
        if with_loss:
            losses, _ = objective.loss(model, teachers, batch)
            total = sum(losses.values()) if isinstance(losses, dict) else losses
            k = len(batch["sample_id"])
            loss_sum, n = loss_sum + float(total) * k, n + k
    return acc, (loss_sum / max(n, 1) if with_loss else None)


def all_reduce_mean(value: float, device) -> float:
    """The mean over workers of a per-worker value (each worker's share weighted equally)."""
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def parameter_spread(model: nn.Module, world: int) -> float:
    """Max difference across ranks of a checksum of all parameters (0 when DDP keeps them identical)."""
    with torch.no_grad():
        checksum = torch.stack([p.detach().double().sum() for p in unwrap(model).parameters()]).sum().cpu()
    if world == 1 or not dist.is_initialized():
        return 0.0
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    values = torch.stack(gathered)
    return float(values.max() - values.min())


def maybe_inject_failure(config: dict, epoch: int, rank: int) -> None:
    """Fault injection for recovery tests: the rank-0 worker process dies once, mid-epoch (after a
    training step, and after a pause standing in for the rest of the epoch's work, so the previous
    epoch's checkpoint has been registered as it would be in any real run)."""
    marker = config.get("fail_marker")
    if config["train"].fail_once_at_epoch == epoch and rank == 0 and marker and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(5)
        os._exit(1)
