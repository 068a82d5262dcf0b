"""Artifacts of a run: plain data as JSON/YAML, text, files, and evaluation results
(``eval/<prefix>/result.json`` plus confusion-matrix PNGs).

Functions take an ``MlflowClient`` and a run id (or, for :func:`log_evaluation`, the
:class:`~raypipe.tracking.lineage.TrackedRun` to log metrics through); :class:`TrackedRun`'s
methods of the same names delegate here. matplotlib is imported only when a PNG is drawn.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from raypipe.tracking.keys import _plain

__all__ = ["log_dict", "log_text", "log_artifact", "log_evaluation"]


def dump_text(obj: Any, artifact_file: str) -> str:
    """``obj`` as YAML (``.yaml``/``.yml``) or indented JSON (anything else)."""
    data = _plain(obj)
    if artifact_file.lower().endswith((".yaml", ".yml")):
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return json.dumps(data, indent=2, default=str)


def log_dict(client, run_id: str, obj: Any, artifact_file: str) -> str:
    """Log ``obj`` (dict, list, dataclass config ...) as JSON or YAML, by the file's extension.
    Returns the artifact path."""
    client.log_text(run_id, dump_text(obj, artifact_file), artifact_file)
    return artifact_file


def log_text(client, run_id: str, text: str, artifact_file: str) -> str:
    client.log_text(run_id, text, artifact_file)
    return artifact_file


def log_artifact(client, run_id: str, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Log a file, or a folder's contents, under ``artifact_path``."""
    p = Path(local_path)
    if p.is_dir():
        client.log_artifacts(run_id, str(p), artifact_path)
    else:
        client.log_artifact(run_id, str(p), artifact_path)


def log_evaluation(run, result: Mapping[str, Any], prefix: str = "test",
                   class_names: Sequence[str] | None = None, per_class: bool = True,
                   bucket_images: bool = False) -> dict[str, float]:
    """Log a ``raypipe.metrics.evaluate`` result into ``run`` (a ``TrackedRun``): the flat metrics
    (``<prefix>/oa``, ``<prefix>/clear/kappa``, ...), the whole result as
    ``eval/<prefix>/result.json`` and the overall confusion matrix as
    ``eval/<prefix>/confusion.png`` (plus ``confusion_<bucket>.png`` for non-empty buckets if
    ``bucket_images``). Returns the metrics logged."""
    from raypipe.metrics import plot_confusion_matrix, to_mlflow_metrics

    p = prefix.strip("/")
    metrics = to_mlflow_metrics(dict(result), prefix=f"{p}/" if p else "", per_class=per_class)
    run.log_metrics(metrics)
    names = list(class_names) if class_names is not None else result.get("class_names")
    adir = f"eval/{p}" if p else "eval"
    log_dict(run.client, run.run_id, result, f"{adir}/result.json")
    with tempfile.TemporaryDirectory(prefix="raypipe-eval-") as tmp:
        plot_confusion_matrix(result["overall"]["confusion"], names, Path(tmp) / "confusion.png",
                              title=f"{p or 'evaluation'} (n={result['overall']['n']})")
        if bucket_images:
            for bucket, m in (result.get("buckets") or {}).items():
                if m["n"] > 0:
                    plot_confusion_matrix(m["confusion"], names, Path(tmp) / f"confusion_{bucket}.png",
                                          title=f"{p} {bucket} (n={m['n']})")
        run.client.log_artifacts(run.run_id, tmp, adir)
    return metrics
