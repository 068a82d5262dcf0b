"""Evaluation metrics (overall and per cloud bucket)."""

from raypipe.metrics.classification import (
    CLEAR_MAX,
    CLOUD_BUCKETS,
    CLOUDY_MIN,
    ConfusionAccumulator,
    cloud_bucket,
    cloud_buckets,
    confusion_matrix,
    evaluate,
    metrics_from_confusion,
    plot_confusion_matrix,
    to_mlflow_metrics,
)

__all__ = [
    "CLEAR_MAX", "CLOUDY_MIN", "CLOUD_BUCKETS", "cloud_bucket", "cloud_buckets",
    "confusion_matrix", "metrics_from_confusion", "evaluate", "to_mlflow_metrics",
    "plot_confusion_matrix", "ConfusionAccumulator",
]
