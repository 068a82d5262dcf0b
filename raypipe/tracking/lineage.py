"""The run tree: one MLflow parent run per pipeline, one nested child run per stage.

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
                   artifacts <name>/state.pt + <name>/spec.json   (checkpoint, see checkpoints.py)
                             eval/<prefix>/result.json + confusion.png  (evaluation)
      reused stage marker run   tags raypipe.kind=stage-reused, raypipe.stage, raypipe.stage_key,
                         raypipe.reused_from=<run id>, mlflow.parentRunId (no params, no artifacts)

Params, ``config.yaml`` and tags are redacted (:func:`raypipe.tracking.keys.redact`): values of
secret-named keys and credentials inside URIs never reach the store.

Reuse: a stage's key (:func:`stage_key`: its config + its inputs' keys + the data hash) is looked
up with :meth:`Lineage.find_stage`; only runs of kind ``stage`` that ended FINISHED match, so a
FAILED/KILLED run or a reuse marker is never reused. :meth:`Lineage.reuse_stage` then records the
reuse in the current pipeline twice: a tag on the parent and a tiny FINISHED child run (so the
MLflow UI shows every stage under every pipeline run). Teachers are always loaded from the
original training run (``raypipe.reused_from``), which holds the checkpoint.

Interrupted stages (docs/reliability.md, "Faults"): every pipeline and stage run is tagged
``raypipe.driver=<host>:<pid>:<process start time>``. A stage run with a key that never FINISHED
(its driver was killed, so it stays RUNNING forever; or it ended FAILED/KILLED) is found by
:meth:`Lineage.find_interrupted_stage` and *continued* by ``stage_run(..., resume=run_id)``: the
same run id, set RUNNING again, re-parented under the new pipeline run, tagged
``raypipe.resumed=true`` and ``raypipe.attempts=<n>`` (its earlier error moved to
``raypipe.previous_error``); its old pipeline run, if still RUNNING, ends KILLED with
``raypipe.interrupted=true``. So a rerun leaves one stage run per stage key, never a duplicate.
A RUNNING run whose driver is still alive on this host is never taken over.

The other concerns live next door: names, keys and params in :mod:`~raypipe.tracking.keys`, the
tracking-URI policy in :mod:`~raypipe.tracking.uris`, the worker-side :class:`RunHandle` in
:mod:`~raypipe.tracking.handle`, artifacts in :mod:`~raypipe.tracking.artifacts`, checkpoints in
:mod:`~raypipe.tracking.checkpoints`; their public names are re-exported here too. This module
imports neither Ray nor (at import time) torch or matplotlib: Ray workers import the package to
get :class:`RunHandle`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping, Sequence

from raypipe.errors import ConfigError
from raypipe.tracking import artifacts, checkpoints
from raypipe.tracking.checkpoints import (
    CHECKPOINT_FORMAT,
    LEGACY_FILE,
    SPEC_FILE,
    STATE_FILE,
    CheckpointError,
    _strip_prefix,  # noqa: F401  (kept importable from here)
)
from raypipe.tracking.handle import RunHandle
from raypipe.tracking.keys import (
    KEY_LIMIT,  # noqa: F401  (old module-level names stay importable from here)
    KIND_PIPELINE,
    KIND_STAGE,
    KIND_STAGE_REUSED,
    METRICS_PER_BATCH,  # noqa: F401
    PARAM_VALUE_LIMIT,
    PARAMS_PER_BATCH,
    TAG_DATA_HASH,
    TAG_ERROR,
    TAG_INPUT_PREFIX,
    TAG_KIND,
    TAG_PARENT,
    TAG_PARENT_REUSED,
    TAG_PARENT_STAGE_RUN,
    TAG_PIPELINE,
    TAG_REUSED_FROM,
    TAG_STAGE,
    TAG_STAGE_KEY,
    TAG_VALUE_LIMIT,
    TRUNCATION_MARKER,
    _check_name,
    _plain,  # noqa: F401
    _safe_key,
    _safe_param,
    _truncate,
    config_params,
    redact,
    redact_text,
    stage_key,
)
from raypipe.tracking.uris import resolve_tracking_uri

__all__ = [
    "stage_key", "resolve_tracking_uri", "config_params", "Lineage", "TrackedRun", "StageRun", "RunHandle",
    "CheckpointError", "TAG_KIND", "TAG_STAGE", "TAG_STAGE_KEY", "TAG_DATA_HASH", "TAG_INPUT_PREFIX",
    "TAG_REUSED_FROM", "TAG_PARENT", "KIND_PIPELINE", "KIND_STAGE", "KIND_STAGE_REUSED",
    "CHECKPOINT_FILE", "STATE_FILE", "SPEC_FILE", "LEGACY_FILE", "CHECKPOINT_FORMAT", "PARAM_VALUE_LIMIT",
    "TRUNCATION_MARKER", "TAG_DRIVER", "TAG_RESUMED", "TAG_ATTEMPTS", "TAG_INTERRUPTED", "driver_id", "driver_alive",
]

TAG_DRIVER = "raypipe.driver"  # <host>:<pid>:<process start time> of the driver that opened the run
TAG_RESUMED = "raypipe.resumed"  # "true" on a stage run continued by a rerun after an interruption
TAG_ATTEMPTS = "raypipe.attempts"  # how many drivers have trained this stage run (1 if absent)
TAG_INTERRUPTED = "raypipe.interrupted"  # "true" on a pipeline run whose driver died (ended KILLED)
TAG_RESUMED_IN = "raypipe.resumed_in"  # on an interrupted pipeline run: the pipeline run that continued it
TAG_PREVIOUS_ERROR = "raypipe.previous_error"

CHECKPOINT_FILE = STATE_FILE  # the file check_run looks for (was model.pt before spec.json split off)

# ---------------------------------------------------------------------------------------------
# Drivers: who opened a run, and whether that process still lives
# ---------------------------------------------------------------------------------------------


def _process_start(pid: int) -> str:
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:
        return ""


def driver_id() -> str:
    """This process as a run's driver: ``<host>:<pid>:<start time>`` (the start time tells a
    reused pid from the original process)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def driver_alive(driver: str | None) -> bool | None:
    """Whether the driver named by a ``raypipe.driver`` tag still runs: True/False when it ran
    on this host, None when that cannot be told (another host, or no tag)."""
    import socket

    try:
        host, pid, started = (driver or "").rsplit(":", 2)
        pid_ = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    if pid_ == os.getpid():
        return True
    current = _process_start(pid_)
    return bool(current) and (not started or current == started)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


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
        self.lineage.set_tags(self.run_id, tags)

    def log_dict(self, obj: Any, artifact_file: str) -> str:
        """Log ``obj`` (dict, list, dataclass config ...) as JSON or YAML (by the file's extension:
        ``.yaml``/``.yml`` -> YAML, anything else JSON). Returns the artifact path."""
        return artifacts.log_dict(self.client, self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> str:
        return artifacts.log_text(self.client, self.run_id, text, artifact_file)

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file, or a folder's contents, under ``artifact_path``."""
        artifacts.log_artifact(self.client, self.run_id, local_path, artifact_path)

    def log_evaluation(self, result: Mapping[str, Any], prefix: str = "test",
                       class_names: Sequence[str] | None = None, per_class: bool = True,
                       bucket_images: bool = False) -> dict[str, float]:
        """Log a ``raypipe.metrics.evaluate`` result: the flat metrics (``<prefix>/oa``,
        ``<prefix>/clear/kappa``, ...), the whole result as ``eval/<prefix>/result.json`` and the
        overall confusion matrix as ``eval/<prefix>/confusion.png`` (plus
        ``confusion_<bucket>.png`` for non-empty buckets if ``bucket_images``).
        Returns the metrics logged."""
        return artifacts.log_evaluation(self, result, prefix=prefix, class_names=class_names,
                                        per_class=per_class, bucket_images=bucket_images)

    def log_checkpoint(self, state_dict: Mapping[str, Any] | Any, model_spec: Mapping[str, Any],
                       extra: Mapping[str, Any] | None = None, name: str = "model") -> str:
        """Save the tensors of ``state_dict`` as ``<name>/state.pt`` and ``{"model_spec",
        "extra"}`` as ``<name>/spec.json`` (see :mod:`raypipe.tracking.checkpoints`).
        ``state_dict`` may be an ``nn.Module``; tensors are moved to CPU and DDP/compile prefixes
        removed. ``extra`` must be JSON data (numpy values are converted), else a
        :class:`CheckpointError` names the key. Returns the artifact path of ``state.pt``."""
        return checkpoints.save_checkpoint(self.client, self.run_id, state_dict, model_spec,
                                           extra=extra, name=name)


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
        return f"Lineage({redact_text(self.tracking_uri)!r}, experiment={self.experiment_name!r})"

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
                              f"experiment {name!r} is deleted in {redact_text(self.tracking_uri)}; restore it "
                              "(mlflow experiments restore) or choose another name")
        return exp.experiment_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (redacted, keys made valid, values truncated) in batches of 100."""
        from mlflow.entities import Param

        items = [Param(*_safe_param(k, v)) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAMS_PER_BATCH], synchronous=True)

    def _log_config_params(self, run_id: str, config: Any) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in config_params(config).items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAMS_PER_BATCH], synchronous=True)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on any run of this store (keys made valid, values stringified, credentials
        inside URIs redacted, truncated to 8000 chars) in batches of 100."""
        from mlflow.entities import RunTag

        items = [RunTag(_safe_key(k), _truncate(redact_text(str(v)), TAG_VALUE_LIMIT)) for k, v in tags.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i:i + PARAMS_PER_BATCH], synchronous=True)

    _set_tags = set_tags  # the old private name

    def _log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        artifacts.log_dict(self.client, run_id, obj, artifact_file)

    def _log_config(self, run_id: str, config: Any) -> None:
        """The full config as ``config.yaml``, secrets redacted like the params."""
        artifacts.log_dict(self.client, run_id, redact(config), "config.yaml")

    @contextlib.contextmanager
    def _run(self, run_name: str, tags: Mapping[str, str], setup, run_id: str | None = None) -> Iterator[str]:
        """Create a run (or continue ``run_id``: set it RUNNING again with ``tags`` added), call
        ``setup(run_id)``, yield, then end FINISHED, or FAILED/KILLED on an exception (re-raised)."""
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={k: redact_text(str(v)) for k, v in tags.items()})
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.set_tags(run_id, tags)
        try:
            setup(run_id)
            yield run_id
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
            with contextlib.suppress(Exception):
                self.client.set_tag(run_id, TAG_ERROR, _truncate(redact_text(f"{type(exc).__name__}: {exc}"),
                                                                        TAG_VALUE_LIMIT))
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, status)
            raise
        self.client.set_terminated(run_id, "FINISHED")

    # -- pipeline / stage runs --------------------------------------------------------------

    @contextlib.contextmanager
    def pipeline_run(self, name: str, config: Mapping[str, Any] | Any,
                     tags: Mapping[str, Any] | None = None, context_tags: bool = True,
                     parent_run_id: str = "", kind: str = KIND_PIPELINE,
                     run_id: str | None = None) -> Iterator[TrackedRun]:
        """The parent run of one pipeline execution. Logs the flattened config as params
        (chunks of 100; values over 6000 chars truncated with a marker), the full config as
        ``config.yaml``, tags ``raypipe.kind=pipeline`` and ``raypipe.pipeline=<name>`` plus
        ``tags`` (and MLflow's context tags: user, source, git commit, if ``context_tags``).
        ``parent_run_id`` nests it under another run (a sweep run: ``kind="sweep"``); ``run_id``
        continues an earlier run (a resumed sweep's).
        Ends FINISHED, or FAILED if the body raises (KILLED on KeyboardInterrupt)."""
        all_tags: dict[str, Any] = {}
        if context_tags:
            with contextlib.suppress(Exception):
                from mlflow.tracking.context.registry import resolve_tags

                all_tags.update(resolve_tags())
        all_tags.update({TAG_KIND: kind, TAG_PIPELINE: name, TAG_DRIVER: driver_id()})
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})

        def setup(run_id: str) -> None:
            self._log_config_params(run_id, config)
            self._log_config(run_id, config)
            self.close_interrupted_pipelines(name, run_id)

        with self._run(name, all_tags, setup, run_id=run_id) as rid:
            yield TrackedRun(self, rid)

    def close_interrupted_pipelines(self, name: str, successor: str) -> list[str]:
        """End KILLED (tagged ``raypipe.interrupted=true``, ``raypipe.resumed_in=<successor>``) every
        RUNNING pipeline run named ``name`` whose driver is known dead (it ran on this host and its
        process is gone): a SIGKILLed driver cannot end its own runs. Returns their ids."""
        closed: list[str] = []
        if "'" in name:
            return closed
        flt = (f"tags.`{TAG_KIND}` = '{KIND_PIPELINE}' AND tags.`{TAG_PIPELINE}` = '{name}' "
               "AND attributes.status = 'RUNNING'")
        with contextlib.suppress(Exception):  # tidying only: never fail a pipeline over it
            for run in self.client.search_runs([self.experiment_id], filter_string=flt, max_results=50):
                if run.info.run_id != successor and driver_alive(run.data.tags.get(TAG_DRIVER)) is False:
                    self.set_tags(run.info.run_id, {TAG_INTERRUPTED: "true", TAG_RESUMED_IN: successor})
                    self.client.set_terminated(run.info.run_id, "KILLED")
                    closed.append(run.info.run_id)
        return closed

    @contextlib.contextmanager
    def stage_run(self, parent_run_id: str, stage: str, key: str, config: Mapping[str, Any] | Any,
                  inputs: Mapping[str, str] | None = None, data_hash: str = "",
                  tags: Mapping[str, Any] | None = None, resume: str | None = None) -> Iterator[StageRun]:
        """A stage's child run under ``parent_run_id``: tags ``mlflow.parentRunId``,
        ``raypipe.kind=stage``, ``raypipe.stage``, ``raypipe.stage_key``, ``raypipe.data_hash``,
        ``raypipe.input.<name>=<run id>``, ``raypipe.driver``; the flattened config as params;
        ``config.yaml`` and ``lineage.json`` artifacts. On success the parent gets
        ``raypipe.stage_run.<stage>``. Ends FAILED if the body raises, so :meth:`find_stage` never
        reuses it.

        ``resume``: an interrupted run of this stage and key (:meth:`find_interrupted_stage`) to
        continue instead of creating a new one: the same run id, re-parented under
        ``parent_run_id``, tagged ``raypipe.resumed=true`` and ``raypipe.attempts=<n>``; its params
        and ``config.yaml`` are those of its first attempt (same key, same config); its old
        pipeline run, if still RUNNING, ends KILLED with ``raypipe.interrupted=true``."""
        _check_name(stage, "stage name")
        inputs = dict(inputs or {})
        for n in inputs:
            _check_name(n, "input name")
        all_tags = {TAG_PARENT: parent_run_id, TAG_KIND: KIND_STAGE, TAG_STAGE: stage,
                    TAG_STAGE_KEY: key, TAG_DATA_HASH: data_hash, TAG_DRIVER: driver_id()}
        all_tags.update({f"{TAG_INPUT_PREFIX}{n}": rid for n, rid in inputs.items()})
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        if resume:
            all_tags.update(self._take_over(resume, stage, key, parent_run_id))

        def setup(run_id: str) -> None:
            if not resume:
                self._log_config_params(run_id, config)
                self._log_config(run_id, config)
            self._log_dict(run_id, {"stage": stage, "stage_key": key, "data_hash": data_hash,
                                    "inputs": inputs, "parent_run_id": parent_run_id}, "lineage.json")

        with self._run(stage, all_tags, setup, run_id=resume) as run_id:
            yield StageRun(self, run_id, parent_run_id, stage, key, inputs, data_hash)
        self._set_tags(parent_run_id, {f"{TAG_PARENT_STAGE_RUN}{stage}": run_id})

    def find_interrupted_stage(self, stage: str, key: str) -> str | None:
        """Run id of the newest training run (kind ``stage``) of ``stage`` with this key that did
        not finish and may be continued: FAILED or KILLED, or RUNNING with a driver that is gone
        (``raypipe.driver``: dead on this host; a driver on another host cannot be checked and is
        taken as gone, since two live drivers of one key would share one Ray Train run anyway).
        A RUNNING run whose driver still lives on this host is never returned."""
        for run in self._stage_runs_with_key(stage, key, "!= 'FINISHED'", max_results=20):
            if run.info.status == "RUNNING" and driver_alive(run.data.tags.get(TAG_DRIVER)) is True:
                continue  # another pipeline on this machine is training it right now
            if run.info.status in ("RUNNING", "FAILED", "KILLED"):
                return run.info.run_id
        return None

    def _take_over(self, run_id: str, stage: str, key: str, parent_run_id: str) -> dict[str, str]:
        """Checks ``run_id`` is a run of this stage and key, ends its old pipeline run KILLED if
        that is still RUNNING (its driver died with the stage's), and returns the tags that mark
        the continuation."""
        run = self.client.get_run(run_id)
        tags = run.data.tags
        if tags.get(TAG_KIND) != KIND_STAGE or tags.get(TAG_STAGE) != stage or tags.get(TAG_STAGE_KEY) != key:
            raise ValueError(f"run {run_id!r} is not a training run of stage {stage!r} with key {key!r}")
        old_parent = tags.get(TAG_PARENT)
        if old_parent and old_parent != parent_run_id:
            with contextlib.suppress(Exception):
                if self.client.get_run(old_parent).info.status == "RUNNING":
                    self.set_tags(old_parent, {TAG_INTERRUPTED: "true", TAG_RESUMED_IN: parent_run_id})
                    self.client.set_terminated(old_parent, "KILLED")
        out = {TAG_RESUMED: "true", TAG_ATTEMPTS: str(int(tags.get(TAG_ATTEMPTS, "1")) + 1)}
        if TAG_ERROR in tags:
            out[TAG_PREVIOUS_ERROR] = tags[TAG_ERROR]
            self.client.delete_tag(run_id, TAG_ERROR)
        return out

    def find_stage(self, stage: str, key: str) -> str | None:
        """Run id of the newest FINISHED training run (kind ``stage``) of ``stage`` with
        ``raypipe.stage_key == key`` in this experiment, else None. FAILED/KILLED/RUNNING runs,
        deleted runs and reuse markers never match."""
        runs = self._stage_runs_with_key(stage, key, "= 'FINISHED'", max_results=1)
        return runs[0].info.run_id if runs else None

    def _stage_runs_with_key(self, stage: str, key: str, status: str, max_results: int) -> list:
        """Training runs (kind ``stage``, not deleted) of ``stage`` with this key whose status
        matches the clause ``status`` (e.g. ``"= 'FINISHED'"``), newest first."""
        from mlflow.entities import ViewType

        _check_name(stage, "stage name")
        _check_name(key, "stage key")
        flt = (f"tags.`{TAG_KIND}` = '{KIND_STAGE}' AND tags.`{TAG_STAGE}` = '{stage}' AND "
               f"tags.`{TAG_STAGE_KEY}` = '{key}' AND attributes.status {status}")
        return self.client.search_runs([self.experiment_id], filter_string=flt, run_view_type=ViewType.ACTIVE_ONLY,
                                       max_results=max_results, order_by=["attributes.start_time DESC"])

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
        run (of ``stage`` if given) holding the whole checkpoint ``name`` (``<name>/state.pt``
        and ``<name>/spec.json``, or a legacy ``<name>/model.pt``; a missing file raises the
        subclass :class:`CheckpointError` naming it). Two cheap store calls, meant for validation
        before any training starts. Returns the ``mlflow`` Run."""
        from mlflow.exceptions import MlflowException

        if not isinstance(run_id, str) or not run_id.strip():
            raise ConfigError(field, f"must be an MLflow run id, got {run_id!r}")
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(field, f"run {run_id!r} does not exist in {redact_text(self.tracking_uri)} "
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
        files = checkpoints._list_files(self.client, run_id, name, field)
        checkpoints.check_checkpoint_files(files, run_id, name, field)
        return run

    def load_checkpoint(self, run_id: str, name: str = "model", field: str = "from_run",
                        stage: str | None = None, check: bool = True) -> dict[str, Any]:
        """``{"state_dict", "model_spec", "extra"}`` of a run's checkpoint, tensors on CPU.
        With ``check`` the run is first validated by :meth:`check_run` (errors name ``field``).
        The tensors are loaded with ``torch.load(weights_only=True)`` and the rest from JSON;
        any problem (missing, truncated, corrupt or unsafe file) raises :class:`CheckpointError`
        naming ``field``, the run and the file. Never falls back to a full unpickle."""
        if check:
            self.check_run(run_id, field, stage=stage, name=name)
        return checkpoints.load_checkpoint(self.client, self.tracking_uri, run_id, name=name, field=field)

    def load_evaluations(self, run_id: str, prefixes: Sequence[str]) -> dict[str, Any]:
        """The evaluations ``eval/<prefix>/result.json`` logged to a run after its checkpoint was saved
        (e.g. test, added when a sweep's best trial was evaluated), for those of ``prefixes`` it has."""
        import json
        import tempfile

        import mlflow

        out: dict[str, Any] = {}
        for prefix in prefixes:
            with tempfile.TemporaryDirectory() as d, contextlib.suppress(Exception):
                path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"eval/{prefix}/result.json",
                                                           dst_path=d, tracking_uri=self.tracking_uri)
                with open(path) as f:
                    out[prefix] = json.load(f)
        return out

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
