"""The one training loop every stage runs on each Ray Train worker. It reads top to bottom:
config → model → teachers → optimiser → resume → epochs of (train, evaluate, checkpoint, report).

Where it runs (how many workers, GPUs, storage, failures) is decided outside, in
:mod:`raypipe.stages.runner`; the same loop runs on a laptop and on a cluster.
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
from raypipe.metrics import ConfusionAccumulator
from raypipe.models import build_model
from raypipe.stages.objectives import build_objective, predictions, student_logits


def train_loop_per_worker(config: dict) -> None:
    # --- configuration --------------------------------------------------------------------------
    train = config["train"]
    objective = build_objective(config["objective"]["kind"], config["objective"]["params"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(train["seed"])
    np.random.seed(train["seed"])
    per_worker_batch = max(1, train["batch_size"] // world)
    use_amp = train["amp"] and device.type == "cuda"

    # --- model (DDP) and frozen teachers ---------------------------------------------------------
    model = build_model(config["model_spec"])
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # global-batch statistics across GPUs
    model = ray.train.torch.prepare_model(model)
    teachers = {name: load_frozen(t, device) for name, t in config["teachers"].items()}

    # --- optimiser and schedule ------------------------------------------------------------------
    if train["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=train["lr"], momentum=train["momentum"],
                                    weight_decay=train["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    if train["schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train["epochs"])
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    # --- resume from the latest checkpoint (after a failure, or a re-run of the same run name) ----
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location=device, weights_only=False)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1

    collate = functools.partial(to_torch, device=device)
    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval")
    run = config.get("run_handle")

    for epoch in range(start_epoch, train["epochs"]):
        # --- train one epoch ---------------------------------------------------------------------
        model.train()
        t0, seen, sums = time.perf_counter(), 0, {}
        for batch in train_shard.iter_torch_batches(batch_size=per_worker_batch, collate_fn=collate, drop_last=True,
                                                    local_shuffle_buffer_size=train["shuffle_buffer"] or None,
                                                    local_shuffle_seed=shuffle_seed(train["seed"], epoch, rank)):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, parts = objective.loss(model, teachers, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            maybe_inject_failure(config, epoch, rank)
            n = len(batch["sample_id"])
            seen += n
            for k, v in {"loss": loss.detach(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
        scheduler.step()
        train_time = time.perf_counter() - t0

        # --- evaluate on this worker's share of the evaluation split, then all-reduce ----------
        acc = evaluate_shard(model, eval_shard, objective.inputs, config["num_classes"], collate)
        if world > 1:
            acc = acc.all_reduce(device=torch.device("cpu"))
        result = acc.result(config.get("class_names"))
        metrics = {f"train/{k}": v / max(seen, 1) for k, v in sums.items()}
        metrics.update({"epoch": epoch, "start_epoch": start_epoch, "train/samples": seen * world, "train/samples_per_s": seen * world / train_time,
                        "eval/oa": _num(result["overall"]["oa"]), "lr": scheduler.get_last_lr()[0],
                        "ddp/param_spread": parameter_spread(model, world)})
        for bucket, res in result["buckets"].items():
            if res["n"]:
                metrics[f"eval/{bucket}/oa"] = _num(res["oa"])

        # --- checkpoint (rank 0 writes) and report ------------------------------------------------
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch,
                            "model_spec": config["model_spec"]}, os.path.join(d, "state.pt"))
                ckpt = ray.train.Checkpoint.from_directory(d)
                if run is not None:
                    run.log_metrics(metrics, step=epoch)
            ray.train.report(metrics, checkpoint=ckpt)


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
def evaluate_shard(model, shard, inputs: str, num_classes: int, collate) -> ConfusionAccumulator:
    model.eval()
    acc = ConfusionAccumulator(num_classes)
    for batch in shard.iter_torch_batches(batch_size=64, collate_fn=collate):
        pred = predictions(model, batch, inputs)
        acc.update(pred.cpu(), batch["label"].cpu(), batch["cloud_fraction"].cpu())
    return acc


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
    if config["train"]["fail_once_at_epoch"] == epoch and rank == 0 and marker and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(5)
        os._exit(1)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


__all__ = ["train_loop_per_worker", "student_logits", "load_frozen"]
