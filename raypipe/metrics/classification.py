"""Scene-classification metrics, overall and per cloud bucket (DESIGN section 7).

All metrics derive from a confusion matrix ``cm[true, pred]`` (rows: reference class, columns:
predicted class). With ``n_ij = cm[i, j]``, ``N = sum n_ij``, row sums ``r_i`` (reference
count of class i) and column sums ``c_j`` (predicted count of class j):

* overall accuracy  ``OA = sum_i n_ii / N``
* recall (producer's accuracy) ``R_i = n_ii / r_i``, undefined (None) when ``r_i = 0``
* precision (user's accuracy)  ``P_i = n_ii / c_i``, undefined (None) when ``c_i = 0``
* ``F1_i = 2 n_ii / (r_i + c_i)``, undefined when ``r_i + c_i = 0`` (class neither in the
  reference nor predicted); equals the harmonic mean of P_i and R_i when both exist, and is 0
  when the class is present on one side only.
* average accuracy ``AA = mean of R_i over classes present in the reference (r_i > 0)``;
  classes with ``r_i = 0`` are listed in ``absent_classes`` (never silently dropped).
* macro-F1 = mean of F1_i over the classes where it is defined (``r_i + c_i > 0``).
* Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` with ``p_o = OA`` and ``p_e = sum_i r_i c_i / N^2``;
  undefined (None) when ``p_e = 1`` (a single class on both sides).

Anything undefined is ``None`` (JSON ``null``); an empty set (N = 0) gives ``n = 0`` and every
metric ``None``. Cloud buckets: ``clear`` (cloud fraction < ``CLEAR_MAX``), ``cloudy``
(> ``CLOUDY_MIN``), ``partly`` otherwise (both bounds inclusive).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from raypipe.clouds.buckets import CLEAR_MAX, CLOUD_BUCKETS, CLOUDY_MIN, cloud_bucket, cloud_buckets

__all__ = [
    "CLEAR_MAX", "CLOUDY_MIN", "CLOUD_BUCKETS", "cloud_bucket", "cloud_buckets",
    "confusion_matrix", "metrics_from_confusion", "evaluate", "to_mlflow_metrics",
    "plot_confusion_matrix", "ConfusionAccumulator",
]

METRIC_KEYS: tuple[str, ...] = ("oa", "aa", "macro_f1", "kappa")


def _np(x: Any) -> np.ndarray:
    """numpy view of an array-like or a (CPU or GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """``cm[true, pred]`` counts (int64, ``num_classes x num_classes``).

    Raises ValueError for mismatched shapes or labels outside ``[0, num_classes)`` (samples whose
    target equals ``ignore_index`` are skipped first).
    """
    p = _np(pred).ravel()
    t = _np(target).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target sizes differ: {p.size} vs {t.size}")
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if p.size and not (np.issubdtype(p.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)):
        raise ValueError(f"pred and target must be integer class indexes, got {p.dtype} and {t.dtype}")
    p, t = p.astype(np.int64), t.astype(np.int64)
    for name, a in (("pred", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside [0, {num_classes}): min {a.min()}, max {a.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return names


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def metrics_from_confusion(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All metrics of one confusion matrix (see the module docstring for definitions).

    Returns ``{"n", "oa", "aa", "macro_f1", "kappa", "absent_classes", "per_class", "confusion"}``
    where ``per_class[name] = {"support", "predicted", "recall", "precision", "f1"}`` and
    ``confusion`` is the matrix as nested lists. Undefined values are ``None``.
    """
    cm = _np(cm).astype(np.int64)
    k = cm.shape[0]
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix must be square, got {cm.shape}")
    names = _names(k, class_names)
    n = int(cm.sum())
    tp = np.diag(cm)
    rows, cols = cm.sum(axis=1), cm.sum(axis=0)
    per_class: dict[str, dict[str, Any]] = {}
    recalls, f1s = [], []
    for i, name in enumerate(names):
        r = _ratio(tp[i], rows[i])
        f1 = _ratio(2 * tp[i], rows[i] + cols[i])
        per_class[name] = {"support": int(rows[i]), "predicted": int(cols[i]), "recall": r,
                           "precision": _ratio(tp[i], cols[i]), "f1": f1}
        if r is not None:
            recalls.append(r)
        if f1 is not None:
            f1s.append(f1)
    kappa = None
    if n > 0:
        po = float(tp.sum()) / n
        pe = float((rows.astype(np.float64) * cols).sum()) / float(n) ** 2
        kappa = (po - pe) / (1.0 - pe) if pe < 1.0 - 1e-12 else None
    return {
        "n": n,
        "oa": _ratio(tp.sum(), n),
        "aa": float(np.mean(recalls)) if recalls else None,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "kappa": kappa,
        "absent_classes": [names[i] for i in range(k) if rows[i] == 0] if n > 0 else list(names),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


class ConfusionAccumulator:
    """Streaming confusion matrices, overall and per cloud bucket, mergeable across workers.

    ``update`` per batch; ``merge`` (or ``+``) another accumulator, e.g. gathered from Ray
    workers; ``all_reduce`` sums in place over a ``torch.distributed`` group; ``result`` gives the
    same dict as ``evaluate``. State is one int64 array ``(1 + len(CLOUD_BUCKETS), C, C)``:
    index 0 overall, then the buckets in ``CLOUD_BUCKETS`` order (``to_array``/``from_array``).
    Samples given without a cloud fraction count in ``overall`` only; ``has_buckets`` tells if
    any fraction was ever given.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((1 + len(CLOUD_BUCKETS), num_classes, num_classes), dtype=np.int64)
        self.has_buckets = False

    def update(self, pred: Any, target: Any, cloud_fraction: Any | None = None) -> None:
        p, t = _np(pred).ravel(), _np(target).ravel()
        self.counts[0] += confusion_matrix(p, t, self.num_classes, self.ignore_index)
        if cloud_fraction is None:
            return
        b = cloud_buckets(cloud_fraction)
        if b.shape != p.shape:
            raise ValueError(f"{b.size} cloud fractions for {p.size} samples")
        self.has_buckets = True
        for j, name in enumerate(CLOUD_BUCKETS, start=1):
            sel = b == name
            if sel.any():
                self.counts[j] += confusion_matrix(p[sel], t[sel], self.num_classes, self.ignore_index)

    def _check(self, other: "ConfusionAccumulator") -> None:
        if not isinstance(other, ConfusionAccumulator) or other.counts.shape != self.counts.shape:
            raise ValueError("can only merge ConfusionAccumulators with the same num_classes")

    def merge(self, other: "ConfusionAccumulator") -> "ConfusionAccumulator":
        """Add ``other``'s counts into this accumulator (in place); returns self."""
        self._check(other)
        self.counts += other.counts
        self.has_buckets = self.has_buckets or other.has_buckets
        return self

    def __add__(self, other: "ConfusionAccumulator") -> "ConfusionAccumulator":
        out = ConfusionAccumulator(self.num_classes, self.ignore_index)
        return out.merge(self).merge(other)

    @classmethod
    def merged(cls, accumulators: Iterable["ConfusionAccumulator"]) -> "ConfusionAccumulator":
        accs = list(accumulators)
        if not accs:
            raise ValueError("nothing to merge")
        out = cls(accs[0].num_classes, accs[0].ignore_index)
        for a in accs:
            out.merge(a)
        return out

    def to_array(self) -> np.ndarray:
        return self.counts.copy()

    @classmethod
    def from_array(cls, counts: Any, has_buckets: bool | None = None) -> "ConfusionAccumulator":
        counts = _np(counts).astype(np.int64)
        if counts.ndim != 3 or counts.shape[0] != 1 + len(CLOUD_BUCKETS) or counts.shape[1] != counts.shape[2]:
            raise ValueError(f"expected shape (4, C, C), got {counts.shape}")
        acc = cls(counts.shape[1])
        acc.counts = counts.copy()
        acc.has_buckets = bool(counts[1:].sum() > 0) if has_buckets is None else has_buckets
        return acc

    def all_reduce(self, group: Any = None, device: Any = None) -> "ConfusionAccumulator":
        """Sum the counts over a ``torch.distributed`` process group, in place (no-op if not
        initialised). ``device``: where the reduction tensor lives (``"cuda"`` for NCCL)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        t = torch.as_tensor(np.concatenate([self.counts.ravel(), [int(self.has_buckets)]]),
                            dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        flat = t.cpu().numpy()
        self.counts = flat[:-1].reshape(self.counts.shape).astype(np.int64)
        self.has_buckets = bool(flat[-1] > 0)
        return self

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """``{"num_classes", "class_names", "overall": metrics, "buckets": {name: metrics} | {}}``."""
        names = _names(self.num_classes, class_names)
        buckets = {}
        if self.has_buckets:
            buckets = {name: metrics_from_confusion(self.counts[j], names)
                       for j, name in enumerate(CLOUD_BUCKETS, start=1)}
        return {"num_classes": self.num_classes, "class_names": names,
                "overall": metrics_from_confusion(self.counts[0], names), "buckets": buckets}


def evaluate(pred: Any, target: Any, cloud_fraction: Any | None, num_classes: int,
             class_names: Sequence[str] | None = None, ignore_index: int | None = None) -> dict[str, Any]:
    """All metrics overall and per cloud bucket (``cloud_fraction=None``: no buckets).

    A bucket with no sample has ``n = 0`` and every metric ``None``.
    See ``ConfusionAccumulator.result`` for the layout.
    """
    acc = ConfusionAccumulator(num_classes, ignore_index)
    acc.update(pred, target, cloud_fraction)
    if cloud_fraction is not None:
        acc.has_buckets = True  # report every bucket, even for an empty input
    return acc.result(class_names)


def _key(name: str) -> str:
    """A class name made safe as one MLflow metric-key component."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


def to_mlflow_metrics(result: dict[str, Any], prefix: str = "", per_class: bool = True) -> dict[str, float]:
    """Flatten an ``evaluate`` result: ``oa, aa, macro_f1, kappa, n, n_absent_classes``, then
    ``recall/<class>``, ``precision/<class>``, ``f1/<class>`` if ``per_class``, and the same under
    ``<bucket>/`` (``clear/oa``, ``cloudy/n`` ...). Undefined (None) metrics are left out; ``n`` is
    always present. ``prefix`` (e.g. ``"test/"``) is prepended to every key. Segmentation results
    (:mod:`raypipe.metrics.segmentation`) add ``miou`` and ``iou/<class>`` per scope and their pixel
    scopes under ``pixels/clear/`` and ``pixels/cloudy/``."""
    out: dict[str, float] = {}

    def put(scope: str, m: dict[str, Any]) -> None:
        out[f"{prefix}{scope}n"] = float(m["n"])
        for k in (*METRIC_KEYS, "miou"):  # miou: segmentation results (raypipe.metrics.segmentation)
            if m.get(k) is not None:
                out[f"{prefix}{scope}{k}"] = float(m[k])
        if m["n"] > 0:
            out[f"{prefix}{scope}n_absent_classes"] = float(len(m["absent_classes"]))
        if per_class:
            for name, pc in m["per_class"].items():
                for k in ("recall", "precision", "f1", "iou"):
                    if pc.get(k) is not None:
                        out[f"{prefix}{scope}{k}/{_key(name)}"] = float(pc[k])

    put("", result["overall"])
    for bucket, m in result.get("buckets", {}).items():
        put(f"{bucket}/", m)
    for scope, m in result.get("pixels", {}).items():  # segmentation: cloud-free / cloudy pixels
        put(f"pixels/{scope}/", m)
    return out


def plot_confusion_matrix(cm: Any, class_names: Sequence[str] | None, path: str | Path,
                          normalize: bool = True, title: str | None = None) -> Path:
    """Write the confusion matrix as a PNG (rows: reference, columns: prediction).

    ``normalize``: colour by row-normalised recall (each cell annotated with its count).
    Uses the Agg canvas directly (no pyplot global state; safe in Ray workers).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = _np(cm).astype(np.int64)
    k = cm.shape[0]
    names = _names(k, class_names)
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0) if normalize else cm
    size = max(4.0, 0.55 * k + 2.0)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, int(cm.max())))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall" if normalize else "count")
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if title:
        ax.set_title(title)
    if k <= 30:
        hi = (shown.max() if shown.size else 0) * 0.6
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > hi and shown[i, j] > 0 else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path
