"""Pseudo-label filtering by the source model's logits (MTTS stage 1; DESIGN section 4).

The pseudo-label is ``argmax_c z_c`` of the source model f_S. With ``p = softmax(z / T)``
(T = 1 by default) a sample is kept when

* ``"max_softmax"``: ``max_c p_c >= threshold``
* ``"margin"``: ``p_(1) - p_(2) >= threshold`` (top-1 minus top-2 probability)
* ``"none"``: always (the "no filtering" ablation; the threshold is ignored)

``threshold`` is in [0, 1] for both rules. ``filter_stats`` summarises what passed, per predicted
class and per cloud bucket, as a flat dict of floats for MLflow.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raypipe.errors import ConfigError
from raypipe.metrics.classification import CLOUD_BUCKETS, cloud_buckets

__all__ = ["FILTER_RULES", "auroc", "filter_scores", "filter_pseudo_labels", "filter_stats"]

FILTER_RULES: tuple[str, ...] = ("none", "max_softmax", "margin")


def _check(rule: str, threshold: float, temperature: float) -> None:
    if rule not in FILTER_RULES:
        raise ConfigError("filtering.rule", f"must be one of {list(FILTER_RULES)}, got {rule!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError("filtering.threshold", f"must be a number in [0, 1], got {threshold!r}")
    if not temperature > 0:
        raise ConfigError("filtering.temperature", f"must be > 0, got {temperature!r}")


@torch.no_grad()
def filter_scores(logits: torch.Tensor, rule: str = "max_softmax", temperature: float = 1.0) -> torch.Tensor:
    """The score each rule thresholds, shape ``(B,)``: max probability, top-1/top-2 margin, or
    ones for ``"none"``."""
    _check(rule, 0.0, temperature)
    p = F.softmax(logits.detach().float() / temperature, dim=-1)
    if rule == "none":
        return torch.ones(p.shape[0], device=p.device)
    if rule == "max_softmax":
        return p.max(dim=-1).values
    if p.shape[-1] < 2:
        return torch.ones(p.shape[0], device=p.device)
    top2 = p.topk(2, dim=-1).values
    return top2[:, 0] - top2[:, 1]


@torch.no_grad()
def filter_pseudo_labels(logits: torch.Tensor, rule: str = "max_softmax", threshold: float = 0.9,
                         temperature: float = 1.0, cloud_fraction: torch.Tensor | None = None,
                         max_cloud_fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pseudo_labels (B,) int64, keep_mask (B,) bool)`` from source-model logits ``(B, C)``.

    ``max_cloud_fraction`` < 1 (a raypipe extension, not published): a sample is also dropped unless
    its ``cloud_fraction`` (from the pipeline's cloud stage) is below it (strictly, as the clear
    bucket of ``raypipe.clouds.buckets``: 0.1 keeps exactly the clear tiles), whatever f_S's confidence;
    ignored with ``rule="none"`` (the no-filtering ablation)."""
    _check(rule, threshold, temperature)
    if not 0.0 <= max_cloud_fraction <= 1.0:
        raise ConfigError("filtering.max_cloud_fraction", f"must be within [0, 1], got {max_cloud_fraction!r}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got {tuple(logits.shape)}")
    labels = logits.detach().argmax(dim=-1)
    if rule == "none":
        return labels, torch.ones_like(labels, dtype=torch.bool)
    keep = filter_scores(logits, rule, temperature) >= threshold
    if max_cloud_fraction < 1.0:
        if cloud_fraction is None:
            raise ValueError("max_cloud_fraction < 1 needs each sample's cloud_fraction")
        c = torch.as_tensor(cloud_fraction, device=keep.device).reshape(-1)
        if c.shape != keep.shape:
            raise ValueError(f"cloud_fraction has {c.numel()} entries for {keep.numel()} samples")
        keep &= c < max_cloud_fraction  # strict, as the clear bucket: 0.1 keeps exactly the clear tiles
    return labels, keep


def _safe(name: str) -> str:
    """A class name made safe as one MLflow metric-key component."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def auroc(positive: Any, negative: Any) -> float | None:
    """P(score of a positive > score of a negative), ties counting ½ (the Mann–Whitney AUROC);
    ``None`` when either side is empty."""
    a, b = _np(positive).astype(np.float64).ravel(), _np(negative).astype(np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[:a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size))


def filter_stats(pseudo_labels: Any, keep: Any, num_classes: int, class_names: Sequence[str] | None = None,
                 cloud_fraction: Any | None = None, target: Any | None = None,
                 prefix: str = "filter/", scores: Any | None = None) -> dict[str, float]:
    """Pass statistics for logging, as a flat ``dict[str, float]``.

    Keys (with ``prefix``): ``n``, ``kept``, ``pass_rate``; ``class/<name>/n``,
    ``class/<name>/pass_rate`` per *predicted* class (name made key-safe) (pass_rate left out when n = 0);
    ``<bucket>/n``, ``<bucket>/pass_rate`` per cloud bucket when ``cloud_fraction`` is given.
    With ``target`` (true labels, only on benchmarks where they exist): ``kept_acc`` and
    ``rejected_acc`` (pseudo-label accuracy of kept / rejected samples), overall and per bucket
    -- what a threshold sweep trades off.
    With ``scores`` (the filter's score per sample) and ``cloud_fraction``: ``score_auroc_clear_vs_cloudy``,
    the probability that a clear tile scores above a fully cloudy one. It needs no labels: below 0.5
    the source model is *more* confident on clouds it never saw, and no threshold on this score can
    keep clouds out of the pseudo labels.
    """
    y = _np(pseudo_labels).ravel().astype(np.int64)
    k = _np(keep).ravel().astype(bool)
    if y.shape != k.shape:
        raise ValueError(f"{y.size} pseudo-labels for {k.size} keep flags")
    names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    correct = None
    if target is not None:
        t = _np(target).ravel().astype(np.int64)
        if t.shape != y.shape:
            raise ValueError(f"{t.size} targets for {y.size} pseudo-labels")
        correct = y == t
    out: dict[str, float] = {}

    def put(scope: str, sel: np.ndarray) -> None:
        n = int(sel.sum())
        out[f"{prefix}{scope}n"] = float(n)
        if n == 0:
            return
        kept = sel & k
        if scope == "":
            out[f"{prefix}kept"] = float(kept.sum())
        out[f"{prefix}{scope}pass_rate"] = float(kept.sum()) / n
        if correct is not None and scope.split("/")[0] != "class":
            if kept.any():
                out[f"{prefix}{scope}kept_acc"] = float(correct[kept].mean())
            rejected = sel & ~k
            if rejected.any():
                out[f"{prefix}{scope}rejected_acc"] = float(correct[rejected].mean())

    put("", np.ones_like(k))
    for c, name in enumerate(names):
        put(f"class/{_safe(name)}/", y == c)
    if cloud_fraction is not None:
        b = cloud_buckets(cloud_fraction)
        if b.shape != y.shape:
            raise ValueError(f"{b.size} cloud fractions for {y.size} samples")
        for bucket in CLOUD_BUCKETS:
            put(f"{bucket}/", b == bucket)
        if scores is not None:
            sc = _np(scores).ravel()
            if sc.shape != y.shape:
                raise ValueError(f"{sc.size} scores for {y.size} samples")
            a = auroc(sc[b == "clear"], sc[b == "cloudy"])
            if a is not None:
                out[f"{prefix}score_auroc_clear_vs_cloudy"] = a
    return out
