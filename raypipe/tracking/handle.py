"""The worker-side run handle: what a Ray Train rank-0 worker needs to log metrics into a run.

:class:`RunHandle` is two strings (tracking URI, run id), so it pickles into Ray tasks; the
``MlflowClient`` is created lazily, once per process and URI. This module imports neither Ray
nor torch.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Mapping

from raypipe.tracking.keys import METRICS_PER_BATCH, _safe_key, redact_text

__all__ = ["RunHandle"]


@functools.lru_cache(maxsize=8)
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _metric_list(metrics: Mapping[str, Any], step: int | None, timestamp_ms: int | None) -> list:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
    out = []
    for k, v in metrics.items():
        if v is None:
            continue
        if hasattr(v, "item"):
            v = v.item()
        v = float(v)
        out.append(Metric(_safe_key(k), v, ts, int(step) if step is not None else 0))
    return out


@dataclasses.dataclass(frozen=True, repr=False)
class RunHandle:
    """All a Ray Train rank-0 worker needs to log into a run: picklable, two strings.

    ``handle.log_metrics({"train/loss": 0.3}, step=epoch)``. The ``MlflowClient`` is created
    lazily, once per process and URI."""

    tracking_uri: str
    run_id: str

    def __repr__(self) -> str:  # never print credentials inside the URI (https://user:pass@host)
        return f"RunHandle({redact_text(self.tracking_uri)!r}, {self.run_id!r})"

    @property
    def client(self):
        return _client(self.tracking_uri)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None,
                    timestamp_ms: int | None = None) -> None:
        """Log numeric metrics (``None`` values skipped; tensors/numpy scalars accepted) in
        batches of 1000; ``step=None`` logs step 0."""
        items = _metric_list(metrics, step, timestamp_ms)
        for i in range(0, len(items), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + METRICS_PER_BATCH], synchronous=True)

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)
