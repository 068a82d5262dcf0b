"""MLflow lineage: one parent run per pipeline, one nested child run per stage.

Layout of what is recorded (all through :class:`mlflow.MlflowClient`, never the fluent
``mlflow.start_run`` API, so no process-global "active run" is involved and several pipelines or
threads can log side by side)::

    pipeline run   tags  raypipe.kind=pipeline, raypipe.pipeline=<name>,
                         raypipe.stage_run.<stage>=<run id>   (effective run of every stage)
                         raypipe.reused.<stage>=<run id>      (only for reused stages)
                   params the flattened whole config          artifact config.yaml
      stage run    tags  raypipe.kind=stage, raypipe.stage, raypipe.stage_key, raypipe.data_hash,
                         raypipe.input.<name>=<run id>, mlflow.parentRunId=<pipeline run id>
                   params the flattened stage config          artifacts config.yaml, lineage.json
                   metrics per-epoch (driver or a Ray rank-0 worker through a RunHandle),
                         evaluation (``<prefix>/oa``, ``<prefix>/clear/kappa`` ...)
                   artifacts <name>/model.pt + <name>/model_spec.json   (checkpoint)
                             eval/<prefix>/result.json + confusion.png  (evaluation)
      reused stage marker run   tags raypipe.kind=stage-reused, raypipe.stage, raypipe.stage_key,
                         raypipe.reused_from=<run id>, mlflow.parentRunId (no params, no artifacts)

Reuse: a stage's key (:func:`stage_key`: its config + its inputs' keys + the data hash) is looked
up with :meth:`Lineage.find_stage`; only runs of kind ``stage`` that ended FINISHED match, so a
FAILED/KILLED run or a reuse marker is never reused. :meth:`Lineage.reuse_stage` then records the
reuse in the current pipeline twice: a tag on the parent and a tiny FINISHED child run (so the
MLflow UI shows every stage under every pipeline run). Teachers are always loaded from the
original training run (``raypipe.reused_from``), which holds the checkpoint.

This module imports neither Ray nor (at import time) torch or matplotlib: Ray workers import it
to get :class:`RunHandle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote

import yaml

from raypipe.config import flatten, to_dict
from raypipe.errors import ConfigError

__all__ = [
    "stage_key", "resolve_tracking_uri", "config_params", "Lineage", "TrackedRun", "StageRun", "RunHandle",
    "TAG_KIND", "TAG_STAGE", "TAG_STAGE_KEY", "TAG_DATA_HASH", "TAG_INPUT_PREFIX",
    "TAG_REUSED_FROM", "TAG_PARENT", "KIND_PIPELINE", "KIND_STAGE", "KIND_STAGE_REUSED",
    "CHECKPOINT_FILE", "SPEC_FILE", "PARAM_VALUE_LIMIT", "TRUNCATION_MARKER",
]

# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

TAG_KIND = "raypipe.kind"
TAG_PIPELINE = "raypipe.pipeline"
TAG_STAGE = "raypipe.stage"
TAG_STAGE_KEY = "raypipe.stage_key"
TAG_DATA_HASH = "raypipe.data_hash"
TAG_INPUT_PREFIX = "raypipe.input."
TAG_REUSED_FROM = "raypipe.reused_from"
TAG_PARENT_STAGE_RUN = "raypipe.stage_run."
TAG_PARENT_REUSED = "raypipe.reused."
TAG_PARENT = "mlflow.parentRunId"
KIND_PIPELINE = "pipeline"
KIND_STAGE = "stage"
KIND_STAGE_REUSED = "stage-reused"

CHECKPOINT_FILE = "model.pt"
SPEC_FILE = "model_spec.json"

# MLflow 3.17 limits (mlflow/utils/validation.py).
PARAM_VALUE_LIMIT = 6000
TAG_VALUE_LIMIT = 8000
KEY_LIMIT = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
TRUNCATION_MARKER = "...[truncated {n} chars; full value in config.yaml]"

_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")   # stage / input names (used inside filter strings)
_KEY_BAD = re.compile(r"[^/\w.\- :]")           # chars MLflow rejects in param/metric/tag keys


# ---------------------------------------------------------------------------------------------
# Plain-data helpers
# ---------------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Plain JSON/YAML data from a config (dataclasses, tuples, sets, paths, numpy scalars)."""
    obj = to_dict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_plain(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(obj)


def _canonical_json(obj: Any) -> str:
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def stage_key(stage: str, config: Mapping[str, Any] | Any, input_keys: Mapping[str, str] | None,
              data_hash: str) -> str:
    """Content key of a stage: sha256 of canonical JSON (sorted keys) of the stage name, its
    resolved config, its inputs' keys (``{"teacher": <key of the teacher stage>}``) and the data
    manifest's hash; 16 hex chars.

    Independent of dict ordering; any change in a config value (``1`` vs ``1.0`` included: resolve
    the config before hashing), an input key or the data hash changes it. Put only what affects
    the result in ``config`` (not e.g. the tracking URI or the number of Ray workers if results do
    not depend on it)."""
    payload = {"stage": str(stage), "config": config, "inputs": dict(input_keys or {}),
               "data_hash": str(data_hash)}
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()[:16]


def _param_value(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    n = len(value)
    marker = TRUNCATION_MARKER.format(n=n)
    return value[: limit - len(marker)] + marker


def _safe_key(key: str) -> str:
    """A key MLflow accepts: invalid chars -> '_', no '..'/'/' path tricks, <= 250 chars."""
    k = _KEY_BAD.sub("_", str(key)).strip("/") or "_"
    k = re.sub(r"/+", "/", k)
    parts = ["_" if p in (".", "..") else p for p in k.split("/")]
    k = "/".join(parts)
    if len(k) > KEY_LIMIT:
        digest = hashlib.sha256(str(key).encode()).hexdigest()[:8]
        k = k[: KEY_LIMIT - 9] + "~" + digest
        k = _KEY_BAD.sub("_", k)
    return k


def config_params(config: Mapping[str, Any] | Any) -> dict[str, str]:
    """The flattened config as MLflow params: dotted keys, values as strings (lists/dicts as JSON),
    values longer than 6000 chars truncated with a marker, keys made valid for MLflow."""
    flat = flatten(_plain(config) or {})
    out: dict[str, str] = {}
    for k, v in flat.items():
        key = _safe_key(k)
        base, i = key, 2
        while key in out:  # two raw keys sanitised to the same one
            key, i = f"{base}_{i}", i + 1
        out[key] = _truncate(_param_value(v), PARAM_VALUE_LIMIT)
    return out


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise ValueError(f"{what} {name!r} must match [A-Za-z0-9_.-]+")
    return name


# ---------------------------------------------------------------------------------------------
# Tracking URI
# ---------------------------------------------------------------------------------------------

_PASS_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc", "postgresql", "mysql",
                 "mssql")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _looks_like_file_store(path: Path) -> bool:
    if path.name == "mlruns":
        return True
    try:
        return any(p.is_dir() and p.name.isdigit() and (p / "meta.yaml").exists() for p in path.iterdir())
    except OSError:
        return False


def resolve_tracking_uri(uri: str | os.PathLike | None, field: str = "tracking.uri") -> str:
    """An absolute tracking URI that the driver and Ray workers (started in another working
    directory) resolve to the same store.

    * ``None`` / ``""``: ``$MLFLOW_TRACKING_URI`` if set (resolved by these rules), else
      ``sqlite:///<cwd>/mlflow.db`` (MLflow 3's default store, made absolute).
    * ``http(s)://``, ``databricks``, ``postgresql://`` ...: unchanged.
    * ``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; ``sqlite:////abs.db`` unchanged;
      in-memory sqlite is refused (workers could not see it).
    * ``file:rel`` / ``file:///abs``: an absolute ``file://`` URI (MLflow's file store).
    * a plain path ending ``.db``/``.sqlite``/``.sqlite3``: that sqlite file; a folder named
      ``mlruns`` or holding file-store data (``<id>/meta.yaml``): file store; any other folder
      (existing or not): ``sqlite:///<folder>/mlflow.db``.
    """
    if uri is None or str(uri).strip() == "":
        env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if env:
            return resolve_tracking_uri(env, field)
        return "sqlite:///" + os.path.abspath("mlflow.db")
    uri = os.fspath(uri).strip()
    low = uri.lower()
    if low.split("://", 1)[0].split(":", 1)[0] in ("databricks", "databricks-uc", "uc"):
        return uri  # "databricks", "databricks://profile", "databricks-uc"
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", uri)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else None  # 'C:' is a drive, not a scheme
    if scheme is None:
        path = Path(os.path.abspath(os.path.expanduser(uri)))
        if path.suffix.lower() in _SQLITE_SUFFIXES:
            return "sqlite:///" + str(path)
        if path.is_file():
            raise ConfigError(field, f"{uri} is a file but not a sqlite database (.db/.sqlite)")
        if _looks_like_file_store(path):
            return path.as_uri()
        return "sqlite:///" + str(path / "mlflow.db")
    if scheme == "sqlite":
        if not low.startswith("sqlite:///"):
            raise ConfigError(field, f"{uri!r}: use sqlite:///<path to a file>; an in-memory store "
                                     "cannot be shared with Ray workers")
        rest = uri[len("sqlite:///"):]
        path, sep, query = rest.partition("?")
        if path in ("", ":memory:"):
            raise ConfigError(field, f"{uri!r}: an in-memory sqlite store cannot be shared with Ray workers")
        path = unquote(path)
        return "sqlite:///" + os.path.abspath(os.path.expanduser(path)) + (sep + query if sep else "")
    if scheme == "file":
        rest = uri[len("file:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):  # file://host/path: keep as given
                return uri
        return Path(os.path.abspath(os.path.expanduser(unquote(rest)))).as_uri()
    return uri  # http(s), databricks, postgresql, mysql, ... : already location-independent


# ---------------------------------------------------------------------------------------------
# Worker-side handle
# ---------------------------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class RunHandle:
    """All a Ray Train rank-0 worker needs to log into a run: picklable, two strings.

    ``handle.log_metrics({"train/loss": 0.3}, step=epoch)``. The ``MlflowClient`` is created
    lazily, once per process and URI."""

    tracking_uri: str
    run_id: str

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


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` (DDP, Ray ``prepare_model``) / ``_orig_mod.`` (torch.compile)
    prefixes when every key carries them."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


class TrackedRun:
    """A run being logged to from the driver (the pipeline run, or a stage run)."""

    def __init__(self, lineage: "Lineage", run_id: str):
        self.lineage = lineage
        self.run_id = run_id

    @property
    def handle(self) -> RunHandle:
        """Picklable ``RunHandle`` for Ray workers."""
        return RunHandle(self.lineage.tracking_uri, self.run_id)

    @property
    def client(self):
        return self.lineage.client

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.handle.log_metrics(metrics, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.lineage._log_params(self.run_id, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.lineage._set_tags(self.run_id, tags)

    def log_dict(self, obj: Any, artifact_file: str) -> str:
        """Log ``obj`` (dict, list, dataclass config ...) as JSON or YAML (by the file's extension:
        ``.yaml``/``.yml`` -> YAML, anything else JSON). Returns the artifact path."""
        self.lineage._log_dict(self.run_id, obj, artifact_file)
        return artifact_file

    def log_text(self, text: str, artifact_file: str) -> str:
        self.client.log_text(self.run_id, text, artifact_file)
        return artifact_file

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file, or a folder's contents, under ``artifact_path``."""
        p = Path(local_path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def log_evaluation(self, result: Mapping[str, Any], prefix: str = "test",
                       class_names: Sequence[str] | None = None, per_class: bool = True,
                       bucket_images: bool = False) -> dict[str, float]:
        """Log a ``raypipe.metrics.evaluate`` result: the flat metrics (``<prefix>/oa``,
        ``<prefix>/clear/kappa``, ...), the whole result as ``eval/<prefix>/result.json`` and the
        overall confusion matrix as ``eval/<prefix>/confusion.png`` (plus
        ``confusion_<bucket>.png`` for non-empty buckets if ``bucket_images``).
        Returns the metrics logged."""
        from raypipe.metrics import plot_confusion_matrix, to_mlflow_metrics

        p = prefix.strip("/")
        metrics = to_mlflow_metrics(dict(result), prefix=f"{p}/" if p else "", per_class=per_class)
        self.log_metrics(metrics)
        names = list(class_names) if class_names is not None else result.get("class_names")
        adir = f"eval/{p}" if p else "eval"
        self.lineage._log_dict(self.run_id, result, f"{adir}/result.json")
        with tempfile.TemporaryDirectory(prefix="raypipe-eval-") as tmp:
            plot_confusion_matrix(result["overall"]["confusion"], names, Path(tmp) / "confusion.png",
                                  title=f"{p or 'evaluation'} (n={result['overall']['n']})")
            if bucket_images:
                for bucket, m in (result.get("buckets") or {}).items():
                    if m["n"] > 0:
                        plot_confusion_matrix(m["confusion"], names, Path(tmp) / f"confusion_{bucket}.png",
                                              title=f"{p} {bucket} (n={m['n']})")
            self.client.log_artifacts(self.run_id, tmp, adir)
        return metrics

    def log_checkpoint(self, state_dict: Mapping[str, Any] | Any, model_spec: Mapping[str, Any],
                       extra: Mapping[str, Any] | None = None, name: str = "model") -> str:
        """Save ``{"state_dict", "model_spec", "extra"}`` with ``torch.save`` as
        ``<name>/model.pt`` and the spec as ``<name>/model_spec.json``. ``state_dict`` may be an
        ``nn.Module``; tensors are moved to CPU and DDP/compile prefixes removed. Keep ``extra``
        to plain data (numbers, strings, lists, dicts, tensors) so it loads with
        ``weights_only=True``. Returns the artifact path of ``model.pt``."""
        import torch

        _check_name(name, "checkpoint name")
        if hasattr(state_dict, "state_dict") and callable(state_dict.state_dict):
            state_dict = state_dict.state_dict()
        sd = {k: (v.detach().cpu() if hasattr(v, "detach") else v) for k, v in _strip_prefix(state_dict).items()}
        spec = _plain(model_spec)
        payload = {"state_dict": sd, "model_spec": spec, "extra": dict(extra or {})}
        with tempfile.TemporaryDirectory(prefix="raypipe-ckpt-") as tmp:
            torch.save(payload, Path(tmp) / CHECKPOINT_FILE)
            (Path(tmp) / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
            self.client.log_artifacts(self.run_id, tmp, name)
        return f"{name}/{CHECKPOINT_FILE}"


class StageRun(TrackedRun):
    """A stage's child run (see :meth:`Lineage.stage_run`)."""

    def __init__(self, lineage: "Lineage", run_id: str, parent_run_id: str, stage: str, key: str,
                 inputs: Mapping[str, str], data_hash: str):
        super().__init__(lineage, run_id)
        self.parent_run_id = parent_run_id
        self.stage = stage
        self.key = key
        self.inputs = dict(inputs)
        self.data_hash = data_hash

    def __repr__(self) -> str:
        return f"StageRun(stage={self.stage!r}, run_id={self.run_id!r}, key={self.key!r})"


# ---------------------------------------------------------------------------------------------
# Lineage
# ---------------------------------------------------------------------------------------------


class Lineage:
    """One MLflow experiment holding pipeline runs and their nested stage runs.

    ``tracking_uri`` goes through :func:`resolve_tracking_uri`. The experiment is created if
    missing; ``artifact_location=None`` keeps MLflow's default for the store (for a sqlite or
    file store: ``<cwd of the creating process>/mlruns/<experiment id>``, stored absolute in the
    experiment; for a server: the server's artifact root). An existing experiment keeps its
    location (``artifact_location`` is then ignored).
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "raypipe",
                 artifact_location: str | None = None):
        from mlflow import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._ensure_experiment(experiment, artifact_location)

    def __repr__(self) -> str:
        return f"Lineage({self.tracking_uri!r}, experiment={self.experiment_name!r})"

    # -- internals --------------------------------------------------------------------------

    def _ensure_experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            if artifact_location is not None and "://" not in str(artifact_location):
                artifact_location = os.path.abspath(os.path.expanduser(artifact_location))
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # created concurrently by another process
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise ConfigError("tracking.experiment",
                              f"experiment {name!r} is deleted in {self.tracking_uri}; restore it "
                              "(mlflow experiments restore) or choose another name")
        return exp.experiment_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_safe_key(k), _truncate(_param_value(v), PARAM_VALUE_LIMIT)) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAMS_PER_BATCH], synchronous=True)

    def _log_config_params(self, run_id: str, config: Any) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in config_params(config).items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAMS_PER_BATCH], synchronous=True)

    def _set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(_safe_key(k), _truncate(str(v), TAG_VALUE_LIMIT)) for k, v in tags.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i:i + PARAMS_PER_BATCH], synchronous=True)

    def _log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        data = _plain(obj)
        if artifact_file.lower().endswith((".yaml", ".yml")):
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(data, indent=2, default=str)
        self.client.log_text(run_id, text, artifact_file)

    @contextlib.contextmanager
    def _run(self, run_name: str, tags: Mapping[str, str], setup) -> Iterator[str]:
        """Create a run, call ``setup(run_id)``, yield, then end FINISHED, or FAILED/KILLED on an
        exception (re-raised)."""
        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()},
                                     run_name=run_name)
        run_id = run.info.run_id
        try:
            setup(run_id)
            yield run_id
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
            with contextlib.suppress(Exception):
                self.client.set_tag(run_id, "raypipe.error", _truncate(f"{type(exc).__name__}: {exc}",
                                                                        TAG_VALUE_LIMIT))
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, status)
            raise
        self.client.set_terminated(run_id, "FINISHED")

    # -- pipeline / stage runs --------------------------------------------------------------

    @contextlib.contextmanager
    def pipeline_run(self, name: str, config: Mapping[str, Any] | Any,
                     tags: Mapping[str, Any] | None = None, context_tags: bool = True) -> Iterator[TrackedRun]:
        """The parent run of one pipeline execution. Logs the flattened config as params
        (chunks of 100; values over 6000 chars truncated with a marker), the full config as
        ``config.yaml``, tags ``raypipe.kind=pipeline`` and ``raypipe.pipeline=<name>`` plus
        ``tags`` (and MLflow's context tags: user, source, git commit, if ``context_tags``).
        Ends FINISHED, or FAILED if the body raises (KILLED on KeyboardInterrupt)."""
        all_tags: dict[str, Any] = {}
        if context_tags:
            with contextlib.suppress(Exception):
                from mlflow.tracking.context.registry import resolve_tags

                all_tags.update(resolve_tags())
        all_tags.update({TAG_KIND: KIND_PIPELINE, TAG_PIPELINE: name})
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})

        def setup(run_id: str) -> None:
            self._log_config_params(run_id, config)
            self._log_dict(run_id, config, "config.yaml")

        with self._run(name, all_tags, setup) as run_id:
            yield TrackedRun(self, run_id)

    @contextlib.contextmanager
    def stage_run(self, parent_run_id: str, stage: str, key: str, config: Mapping[str, Any] | Any,
                  inputs: Mapping[str, str] | None = None, data_hash: str = "",
                  tags: Mapping[str, Any] | None = None) -> Iterator[StageRun]:
        """A stage's child run under ``parent_run_id``: tags ``mlflow.parentRunId``,
        ``raypipe.kind=stage``, ``raypipe.stage``, ``raypipe.stage_key``, ``raypipe.data_hash``,
        ``raypipe.input.<name>=<run id>``; the flattened config as params; ``config.yaml`` and
        ``lineage.json`` artifacts. On success the parent gets ``raypipe.stage_run.<stage>``.
        Ends FAILED if the body raises, so :meth:`find_stage` never reuses it."""
        _check_name(stage, "stage name")
        inputs = dict(inputs or {})
        for n in inputs:
            _check_name(n, "input name")
        all_tags = {TAG_PARENT: parent_run_id, TAG_KIND: KIND_STAGE, TAG_STAGE: stage,
                    TAG_STAGE_KEY: key, TAG_DATA_HASH: data_hash}
        all_tags.update({f"{TAG_INPUT_PREFIX}{n}": rid for n, rid in inputs.items()})
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})

        def setup(run_id: str) -> None:
            self._log_config_params(run_id, config)
            self._log_dict(run_id, config, "config.yaml")
            self._log_dict(run_id, {"stage": stage, "stage_key": key, "data_hash": data_hash,
                                    "inputs": inputs, "parent_run_id": parent_run_id}, "lineage.json")

        with self._run(stage, all_tags, setup) as run_id:
            yield StageRun(self, run_id, parent_run_id, stage, key, inputs, data_hash)
        self._set_tags(parent_run_id, {f"{TAG_PARENT_STAGE_RUN}{stage}": run_id})

    def find_stage(self, stage: str, key: str) -> str | None:
        """Run id of the newest FINISHED training run (kind ``stage``) of ``stage`` with
        ``raypipe.stage_key == key`` in this experiment, else None. FAILED/KILLED/RUNNING runs,
        deleted runs and reuse markers never match."""
        from mlflow.entities import ViewType

        _check_name(stage, "stage name")
        _check_name(key, "stage key")
        flt = (f"tags.`{TAG_KIND}` = '{KIND_STAGE}' AND tags.`{TAG_STAGE}` = '{stage}' AND "
               f"tags.`{TAG_STAGE_KEY}` = '{key}' AND attributes.status = 'FINISHED'")
        runs = self.client.search_runs([self.experiment_id], filter_string=flt,
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
                                       order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def reuse_stage(self, parent_run_id: str, stage: str, key: str, reused_run_id: str) -> str:
        """Record that ``stage`` was not retrained in this pipeline because ``reused_run_id``
        matches its key: tags ``raypipe.reused.<stage>`` and ``raypipe.stage_run.<stage>`` on the
        parent, and a tiny FINISHED child run (``raypipe.kind=stage-reused``,
        ``raypipe.reused_from``; no params, no artifacts) so the stage shows under the pipeline in
        the UI. Returns the marker run's id; load checkpoints from ``reused_run_id``."""
        _check_name(stage, "stage name")
        tags = {TAG_PARENT: parent_run_id, TAG_KIND: KIND_STAGE_REUSED, TAG_STAGE: stage,
                TAG_STAGE_KEY: key, TAG_REUSED_FROM: reused_run_id}
        with self._run(f"{stage} (reused)", tags, lambda run_id: None) as marker:
            pass
        self._set_tags(parent_run_id, {f"{TAG_PARENT_REUSED}{stage}": reused_run_id,
                                       f"{TAG_PARENT_STAGE_RUN}{stage}": reused_run_id})
        return marker

    def stage_runs(self, pipeline_run_id: str) -> dict[str, str]:
        """``{stage: run id}`` of every stage recorded so far in a pipeline run (trained or
        reused), from the parent's ``raypipe.stage_run.<stage>`` tags."""
        tags = self.client.get_run(pipeline_run_id).data.tags
        return {k[len(TAG_PARENT_STAGE_RUN):]: v for k, v in tags.items() if k.startswith(TAG_PARENT_STAGE_RUN)}

    # -- checking and loading teachers ------------------------------------------------------

    def check_run(self, run_id: str, field: str, stage: str | None = None, name: str = "model"):
        """Raise ``ConfigError(field, ...)`` unless ``run_id`` is an existing, active, FINISHED
        run (of ``stage`` if given) holding the checkpoint ``<name>/model.pt``. Two cheap store
        calls, meant for validation before any training starts. Returns the ``mlflow`` Run."""
        from mlflow.exceptions import MlflowException

        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigError(field, f"must be an MLflow run id, got {run_id!r}")
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(field, f"run {run_id!r} does not exist in {self.tracking_uri} "
                                     f"({exc.error_code})") from exc
        info, tags = run.info, run.data.tags
        if info.lifecycle_stage != "active":
            raise ConfigError(field, f"run {run_id!r} is deleted")
        if tags.get(TAG_KIND) == KIND_STAGE_REUSED:
            raise ConfigError(field, f"run {run_id!r} only marks a reuse of stage "
                                     f"{tags.get(TAG_STAGE)!r}; use the original run "
                                     f"{tags.get(TAG_REUSED_FROM)!r}")
        if info.status != "FINISHED":
            raise ConfigError(field, f"run {run_id!r} ({tags.get(TAG_STAGE) or info.run_name}) is "
                                     f"{info.status}, not FINISHED")
        if stage is not None and tags.get(TAG_STAGE) != stage:
            raise ConfigError(field, f"run {run_id!r} is stage {tags.get(TAG_STAGE)!r}, expected {stage!r}")
        try:
            files = {posix.path for posix in self.client.list_artifacts(run_id, name)}
        except (MlflowException, OSError) as exc:
            raise ConfigError(field, f"cannot list artifacts of run {run_id!r}: {exc}") from exc
        if f"{name}/{CHECKPOINT_FILE}" not in files:
            raise ConfigError(field, f"run {run_id!r} has no checkpoint artifact {name}/{CHECKPOINT_FILE}")
        return run

    def load_checkpoint(self, run_id: str, name: str = "model", field: str = "from_run",
                        stage: str | None = None, check: bool = True) -> dict[str, Any]:
        """``{"state_dict", "model_spec", "extra"}`` of a run's checkpoint, tensors on CPU.
        With ``check`` the run is first validated by :meth:`check_run` (errors name ``field``).
        Loaded with ``torch.load(weights_only=True)``; if ``extra`` held other objects, falls
        back to a full unpickle (our own artifacts only) with a warning."""
        import pickle

        import torch
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        if check:
            self.check_run(run_id, field, stage=stage, name=name)
        with tempfile.TemporaryDirectory(prefix="raypipe-load-") as tmp:
            try:
                path = download_artifacts(run_id=run_id, artifact_path=f"{name}/{CHECKPOINT_FILE}",
                                          dst_path=tmp, tracking_uri=self.tracking_uri)
            except (MlflowException, OSError) as exc:
                raise ConfigError(field, f"cannot download {name}/{CHECKPOINT_FILE} of run {run_id!r}: {exc}") from exc
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                warnings.warn(f"checkpoint of run {run_id} holds non-tensor objects; loading it with "
                              "weights_only=False", stacklevel=2)
                payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or "state_dict" not in payload or "model_spec" not in payload:
            raise ConfigError(field, f"{name}/{CHECKPOINT_FILE} of run {run_id!r} is not a raypipe checkpoint")
        payload.setdefault("extra", {})
        return payload

    def load_model(self, run_id: str, name: str = "model", field: str = "from_run",
                   stage: str | None = None, check: bool = True):
        """``(model, checkpoint)``: the model rebuilt with ``raypipe.models.build_model`` from
        the stored spec, weights loaded strictly, in eval mode."""
        from raypipe.models import build_model

        ckpt = self.load_checkpoint(run_id, name=name, field=field, stage=stage, check=check)
        try:
            model = build_model(ckpt["model_spec"], field=f"{field}:{name}/{SPEC_FILE}")
            model.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as exc:
            raise ConfigError(field, f"checkpoint {name} of run {run_id!r} does not fit its model spec: {exc}") from exc
        return model.eval(), ckpt
