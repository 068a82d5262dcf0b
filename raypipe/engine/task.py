"""Task objects: what a prediction is, how it is scored, per epoch and at the end of a stage.

The loop and the evaluator know nothing about classes or pixels; they ask the task:

* ``label_key``: the batch column holding the reference (``label`` for scenes, ``label_map`` for
  segmentation);
* ``infer(model, batch, inputs)``: the model's output on a batch (segmentation overrides it with
  sliding-window inference);
* ``predict(output)``: predictions from an output (argmax over classes of the fused head);
* ``accumulator()``: a metric accumulator with ``update(pred, batch)``, ``all_reduce()`` across
  Ray Train workers and ``result()``;
* ``epoch_metrics(result)``: the few numbers logged per epoch (``oa``, ``<bucket>/oa``);
* ``inference_columns(output, batch)``: the columns batch inference keeps per sample;
* ``evaluate(columns)``: the final evaluation (overall and per cloud bucket) that MLflow and tables show;
* ``figures(columns)``: PNGs logged beside an evaluation (``{file name: bytes}``; none by default);
* ``table(method, stages, split)``: the results table printed and logged at the end of a run;
* ``selection_metric``: the per-epoch val metric ``train.selection: val_labels`` maximises.

A task's own settings are its ``Config`` (a dataclass; the method configuration's ``task`` section, e.g.
``task.window`` for segmentation's sliding window). Segmentation lives in
:mod:`raypipe.engine.segmentation`.

Cloud buckets always use ``bucket_fraction``, the best mask the data has (simulator truth on the
generated benchmark, the dataset's masks on M3M-CR), never the training-time ``cloud_fraction`` a
method may read (a detector's, by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from raypipe.engine.objective import forward, main_logits
from raypipe.engine.registry import TASKS
from raypipe.metrics import CLOUD_BUCKETS, ConfusionAccumulator, evaluate


@dataclass
class NoTaskConfig:
    """A task without settings of its own."""


class Task:
    name = ""
    label_key = "label"
    Config: type = NoTaskConfig
    selection_metric = "oa"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, config: Any = None):
        self.num_classes = num_classes
        self.class_names = list(class_names or [])
        self.config = config

    def figures(self, columns: Mapping[str, np.ndarray]) -> dict[str, bytes]:
        return {}

    def log_evaluation(self, run, result: Mapping[str, Any], prefix: str, class_names: Sequence[str]) -> None:
        """Record an ``evaluate`` result in a stage's MLflow run (``<prefix>/…`` metrics, artifacts)."""
        run.log_evaluation(result, prefix=prefix, class_names=class_names)

    def infer(self, model, batch: Mapping[str, Any], inputs: str) -> Any:
        return forward(model, batch, inputs)

    def predict(self, output: Any) -> torch.Tensor:
        return main_logits(output).argmax(dim=1)


@TASKS.register("classification")
class ClassificationTask(Task):
    """Single-label scene classification: OA, AA, macro-F1, κ overall and per cloud bucket."""

    name = "classification"
    label_key = "label"

    def accumulator(self) -> "_Accumulator":
        return _Accumulator(ConfusionAccumulator(self.num_classes), self.class_names)

    def epoch_metrics(self, result: Mapping[str, Any]) -> dict[str, float]:
        out = {"oa": _num(result["overall"]["oa"])}
        for bucket in CLOUD_BUCKETS:
            res = result["buckets"].get(bucket, {})
            if res.get("n"):
                out[f"{bucket}/oa"] = _num(res["oa"])
        return out

    def inference_columns(self, output: Any, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        logits = main_logits(output).float().cpu().numpy()
        return {"sample_id": np.asarray(batch["sample_id"]), "logits": logits, "pred": logits.argmax(1),
                "label": np.asarray(batch["label"]), "cloud_fraction": np.asarray(batch["cloud_fraction"]),
                "bucket_fraction": np.asarray(_buckets_of(batch))}

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        fraction = _buckets_of(columns)
        result = evaluate(columns["pred"], columns["label"], fraction, self.num_classes, self.class_names)
        result["coverage"] = coverage_bins(columns["pred"], columns["label"], fraction)
        return result

    def table(self, method, stages: Mapping, split: str = "test") -> str:
        from raypipe.engine.report import results_table

        return results_table(method, stages, split)


COVERAGE_BINS = 10


def coverage_bins(pred, label, fraction, bins: int = COVERAGE_BINS) -> list[dict[str, Any]]:
    """Accuracy against cloud coverage: ``bins`` equal bins of the cloud fraction over [0, 1] (the last
    one closed), each ``{"lo", "hi", "n", "oa"}`` (``oa`` None when empty). Samples without a label
    (negative) are left out."""
    pred, label, fraction = (np.asarray(a).reshape(-1) for a in (pred, label, fraction))
    valid = label >= 0
    index = np.clip((fraction * bins).astype(int), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = valid & (index == b)
        n = int(sel.sum())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": n,
                    "oa": float((pred[sel] == label[sel]).mean()) if n else None})
    return out


class _Accumulator:
    def __init__(self, acc: ConfusionAccumulator, class_names: list[str]):
        self.acc, self.class_names = acc, class_names

    def update(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> None:
        self.acc.update(pred.cpu(), batch["label"].cpu(), _buckets_of(batch).cpu())

    def all_reduce(self) -> "_Accumulator":
        self.acc = self.acc.all_reduce(device=torch.device("cpu"))
        return self

    def result(self) -> dict[str, Any]:
        return self.acc.result(self.class_names or None)


def _buckets_of(batch: Mapping[str, Any]):
    """The fraction cloud buckets are made from: the best mask there is (see the module docstring)."""
    return batch["bucket_fraction"] if "bucket_fraction" in batch else batch["cloud_fraction"]


def build_task(name: str, num_classes: int, class_names: Sequence[str] | None = None, config: Any = None) -> Task:
    """The task ``name`` (``config``: its ``Config`` instance, or a dict of its fields; None = defaults)."""
    cls = TASKS.get(name, "task")
    if isinstance(config, Mapping):
        from raypipe.config import from_dict

        config = from_dict(cls.Config, dict(config), "task")
    return cls(num_classes, class_names, config)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


from raypipe.engine import segmentation as _segmentation  # noqa: E402,F401  (registers "segmentation")
from raypipe.engine import restoration as _restoration  # noqa: E402,F401  (registers "restoration")
