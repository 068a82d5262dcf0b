"""Segmentation metrics: pixel confusion matrices for all, cloud-free and cloudy pixels, and per tile
cloud bucket (DESIGN sections 6 and 7).

Every number derives from a confusion matrix ``cm[true, pred]`` of pixels whose reference is not
ignored (255). On top of the classification metrics of :func:`raypipe.metrics.metrics_from_confusion`
(OA, AA = mean per-class accuracy, macro-F1, kappa, per-class recall / precision / F1), each scope has

* ``IoU_i = n_ii / (r_i + c_i - n_ii)`` (intersection over union of class i), undefined (None) when
  class i is neither in the reference nor predicted;
* ``miou`` = the mean of ``IoU_i`` over the classes where it is defined. A class present in the
  reference but never predicted counts with IoU 0; a class absent on both sides is left out (and
  listed in ``absent_classes``) rather than silently counted as 0 or 1.

Scopes (``SegmentationAccumulator.result``):

* ``overall``: every labelled pixel;
* ``pixels.clear`` / ``pixels.cloudy``: labelled pixels where the cloud mask, brought to the label grid
  by nearest neighbour, is 0 / 1 (CloudSeg's "cloud-free" and "cloudy" pixels);
* ``buckets.clear`` / ``partly`` / ``cloudy``: every labelled pixel of the tiles in that cloud-coverage
  bucket (the tile's ``bucket_fraction``, the same bounds as for scene classification).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from raypipe.clouds.buckets import CLOUD_BUCKETS, cloud_buckets
from raypipe.data.labels import IGNORE_INDEX
from raypipe.metrics.classification import _names, _np, metrics_from_confusion

__all__ = ["PIXEL_SCOPES", "SegmentationAccumulator", "segmentation_metrics", "mask_to_grid", "pixel_confusion"]

PIXEL_SCOPES: tuple[str, ...] = ("clear", "cloudy")
_SCOPES = ("overall", *(f"pixels/{p}" for p in PIXEL_SCOPES), *(f"buckets/{b}" for b in CLOUD_BUCKETS))


def segmentation_metrics(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`~raypipe.metrics.metrics_from_confusion` plus ``miou`` and ``per_class[name]["iou"]``."""
    m = metrics_from_confusion(cm, class_names)
    cm = np.asarray(m["confusion"], dtype=np.int64)
    tp, rows, cols = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    ious = []
    for i, name in enumerate(m["per_class"]):
        union = rows[i] + cols[i] - tp[i]
        iou = float(tp[i] / union) if union > 0 else None
        m["per_class"][name]["iou"] = iou
        if iou is not None:
            ious.append(iou)
    m["miou"] = float(np.mean(ious)) if ious else None
    return m


def pixel_confusion(pred: np.ndarray, label: np.ndarray, num_classes: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrix of the pixels whose label is a class (not 255) and, if given, where ``keep``."""
    p, t = np.asarray(pred).reshape(-1).astype(np.int64), np.asarray(label).reshape(-1).astype(np.int64)
    valid = (t >= 0) & (t < num_classes) & (t != IGNORE_INDEX)
    if keep is not None:
        valid &= np.asarray(keep, dtype=bool).reshape(-1)
    if valid.any() and (p[valid].min() < 0 or p[valid].max() >= num_classes):
        raise ValueError(f"predictions outside 0..{num_classes - 1}")
    return np.bincount(t[valid] * num_classes + p[valid], minlength=num_classes ** 2).reshape(num_classes, num_classes)


def mask_to_grid(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (..., H, W) cloud mask brought to the label grid ``shape`` by nearest neighbour (row
    ``floor(i * H / h)``), as CloudSeg brings its 300 px mask to the 90 px labels."""
    mask = np.asarray(mask)
    h, w = shape
    rows = np.arange(h) * mask.shape[-2] // h
    cols = np.arange(w) * mask.shape[-1] // w
    return mask[..., rows, :][..., cols]


class SegmentationAccumulator:
    """Streaming pixel confusion matrices for every scope (module docstring), mergeable across workers.

    ``update(pred, label, cloud_mask, bucket_fraction)`` per batch: ``pred`` and ``label`` (B, h, w) on
    the label grid, ``cloud_mask`` (B, H, W) at any resolution (brought to the label grid here),
    ``bucket_fraction`` (B,). State: one int64 array ``(len(scopes), C, C)``."""

    scopes = _SCOPES

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = np.zeros((len(self.scopes), num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, label: Any, cloud_mask: Any, bucket_fraction: Any) -> None:
        pred, label = _np(pred), _np(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from the label's {label.shape}")
        mask = mask_to_grid(_np(cloud_mask), label.shape[-2:]).astype(bool)
        buckets = cloud_buckets(_np(bucket_fraction))
        k = self.num_classes
        self.counts[0] += pixel_confusion(pred, label, k)
        self.counts[1] += pixel_confusion(pred, label, k, ~mask)
        self.counts[2] += pixel_confusion(pred, label, k, mask)
        for j, name in enumerate(CLOUD_BUCKETS, start=3):
            sel = buckets == name
            if sel.any():
                self.counts[j] += pixel_confusion(pred[sel], label[sel], k)

    def merge(self, other: "SegmentationAccumulator") -> "SegmentationAccumulator":
        self.counts += other.counts
        return self

    def all_reduce(self, group: Any = None, device: Any = None) -> "SegmentationAccumulator":
        """Sum the counts over a ``torch.distributed`` group, in place (no-op if not initialised)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.as_tensor(self.counts.ravel(), dtype=torch.int64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            self.counts = t.cpu().numpy().reshape(self.counts.shape).astype(np.int64)
        return self

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """``{"num_classes", "class_names", "overall", "pixels": {clear, cloudy}, "buckets": {clear,
        partly, cloudy}}``, each scope a :func:`segmentation_metrics` dict."""
        names = _names(self.num_classes, class_names)
        scoped = {s: segmentation_metrics(self.counts[i], names) for i, s in enumerate(self.scopes)}
        return {"num_classes": self.num_classes, "class_names": names, "overall": scoped["overall"],
                "pixels": {p: scoped[f"pixels/{p}"] for p in PIXEL_SCOPES},
                "buckets": {b: scoped[f"buckets/{b}"] for b in CLOUD_BUCKETS}}
