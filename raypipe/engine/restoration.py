"""``restoration``: a stage whose model maps an image to an image (SPL's cloud remover), scored
against the cloud-free acquisition ``optical_clear`` of the same tile: L1, PSNR and SSIM (normalised
units; PSNR with each reference's own range as its peak). Per epoch on val, and at evaluation."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist

from raypipe.engine.registry import TASKS
from raypipe.engine.task import Task
from raypipe.losses.restoration import ssim


def restored_of(output: Any) -> torch.Tensor:
    """The restored image of a model's output (``.restored`` where the output has one)."""
    return output.restored if getattr(output, "restored", None) is not None else output


def image_scores(restored: torch.Tensor, clear: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: ``l1`` (mean |r − c|), ``psnr`` (10 log10(range(c)² / MSE)) and ``ssim``."""
    r, c = restored.float(), clear.float()
    mse = (r - c).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    peak = (c.flatten(1).amax(1) - c.flatten(1).amin(1)).clamp_min(1e-6)
    return {"l1": (r - c).abs().flatten(1).mean(1), "psnr": 10 * torch.log10(peak ** 2 / mse),
            "ssim": ssim(r, c, reduce=False)}


@TASKS.register("restoration")
class RestorationTask(Task):
    name = "restoration"
    label_key = "optical_clear"
    selection_metric = "psnr"

    def predict(self, output: Any) -> torch.Tensor:
        return restored_of(output)

    def accumulator(self) -> "_Sums":
        return _Sums()

    def epoch_metrics(self, result: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in result["overall"].items() if k != "n"}

    def inference_columns(self, output: Any, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        restored = restored_of(output)
        clear = torch.as_tensor(batch["optical_clear"], device=restored.device)
        scores = image_scores(restored, clear)
        # the same scores of the input as it came (no removal): what the model has to beat
        given = image_scores(torch.as_tensor(batch["optical"], device=restored.device), clear)
        return {"sample_id": np.asarray(batch["sample_id"]), **{k: v.cpu().numpy() for k, v in scores.items()},
                **{f"input_{k}": v.cpu().numpy() for k, v in given.items()}}

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Mean L1, PSNR and SSIM of the restored images, and (``input_*``) of the inputs as they came."""
        n = len(columns["sample_id"])
        keys = [k for k in ("l1", "psnr", "ssim", "input_l1", "input_psnr", "input_ssim") if k in columns]
        overall = {k: float(np.mean(columns[k])) if n else math.nan for k in keys}
        return {"overall": {**overall, "n": n}, "buckets": {}}

    def log_evaluation(self, run, result: Mapping[str, Any], prefix: str, class_names) -> None:
        from raypipe.tracking.artifacts import log_dict

        run.log_metrics({f"{prefix}/{k}": float(v) for k, v in result["overall"].items()})
        log_dict(run.client, run.run_id, result, f"eval/{prefix}/result.json")


class _Sums:
    """Sums of the per-image scores over a worker's val shard; all-reduced across workers."""

    KEYS = ("l1", "psnr", "ssim")

    def __init__(self):
        self.sums = torch.zeros(len(self.KEYS) + 1, dtype=torch.float64)

    def update(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> None:
        scores = image_scores(pred.detach(), batch["optical_clear"])
        self.sums += torch.tensor([float(scores[k].sum()) for k in self.KEYS] + [len(pred)], dtype=torch.float64)

    def all_reduce(self) -> "_Sums":
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums)
        return self

    def result(self) -> dict[str, Any]:
        n = float(self.sums[-1])
        return {"overall": {**{k: float(self.sums[i]) / max(n, 1.0) for i, k in enumerate(self.KEYS)}, "n": int(n)},
                "buckets": {}}
