"""Checkpoints: tensors in one file, everything else as JSON; nothing is ever unpickled.

Layout, under the artifact folder ``<name>/`` of a run (``name`` defaults to ``model``)::

    <name>/state.pt    torch.save of a flat {parameter name: tensor} dict (CPU tensors,
                       DDP ``module.`` / torch.compile ``_orig_mod.`` prefixes removed)
    <name>/spec.json   {"format": "raypipe.checkpoint/2", "model_spec": {...}, "extra": {...}}

Writing (:func:`save_checkpoint`): ``model_spec`` and ``extra`` must be JSON data; numpy and
torch scalars/arrays become numbers/(nested) lists, tuples become lists, paths strings; anything
else (or a non-string dict key) raises :class:`CheckpointError` naming the key, before anything
is uploaded. Non-finite floats are kept (written ``NaN``/``Infinity``, read back by Python).

Reading (:func:`load_checkpoint`): both files are downloaded; ``state.pt`` is read with
``torch.load(weights_only=True)`` and must hold only tensors, ``spec.json`` with :mod:`json`.
A missing, truncated or corrupt file, or a pickle that ``weights_only`` refuses, raises
:class:`CheckpointError` naming the run and the file. There is no fallback to a full unpickle
and nothing retrains silently.

Runs written before this layout hold ``<name>/model.pt`` (one torch.save of
``{"state_dict", "model_spec", "extra"}``); it is read the same safe way
(``weights_only=True``) or refused with a :class:`CheckpointError` that says to retrain.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping

from raypipe.config import to_dict
from raypipe.errors import ConfigError
from raypipe.tracking.keys import _check_name

__all__ = ["CheckpointError", "STATE_FILE", "SPEC_FILE", "LEGACY_FILE", "CHECKPOINT_FORMAT",
           "save_checkpoint", "load_checkpoint", "check_checkpoint_files", "atomic_write", "load_state_file"]

STATE_FILE = "state.pt"
SPEC_FILE = "spec.json"
LEGACY_FILE = "model.pt"
CHECKPOINT_FORMAT = "raypipe.checkpoint/2"
_DETAIL_LIMIT = 600  # torch's weights_only refusals are long; the head says what was refused


class CheckpointError(ConfigError):
    """A checkpoint cannot be written or read safely.

    ``run_id`` is the run, ``file`` the artifact path (``model/state.pt`` ...), ``detail`` what is
    wrong, ``field`` the config field (or CLI option) that named the run, as in
    :class:`~raypipe.errors.ConfigError` (of which this is a subclass, so callers catching
    ``ConfigError`` or ``RaypipeError`` keep working)."""

    def __init__(self, run_id: str, file: str, detail: str, field: str = "checkpoint"):
        self.run_id = run_id
        self.file = file
        self.detail = detail
        super().__init__(field, f"run {run_id!r}, checkpoint file {file}: {detail}")

    def __reduce__(self):  # survive pickling across Ray workers
        return (CheckpointError, (self.run_id, self.file, self.detail, self.field))


# -- writing ------------------------------------------------------------------------------------


def _open_for_write(path: str):
    """The file a checkpoint is written to (a seam: tests make it fail like a full disk)."""
    return open(path, "wb")


def _errno_of(exc: BaseException) -> int | None:
    """The errno behind ``exc`` (torch.save reports a failed write as a RuntimeError whose context
    is the OSError)."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e.errno
        e = e.__cause__ or e.__context__
    return None


def atomic_write(path: str | os.PathLike, write, run_id: str = "", what: str = "checkpoint") -> str:
    """Write ``path`` all or nothing: ``write(f)`` fills a temporary file in the same folder, which
    is flushed, fsynced, then renamed over ``path`` (and the folder fsynced). A failure (full disk,
    I/O error) removes the temporary file, leaves any previous ``path`` exactly as it was, and
    raises :class:`CheckpointError` naming the file (``no space left on device`` for ENOSPC)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with _open_for_write(tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(exc, Exception):
            raise
        code = _errno_of(exc)
        if code == errno.ENOSPC:
            detail = (f"cannot be written: no space left on device (ENOSPC) in {folder}; nothing was "
                      f"replaced, the previous {what} (if any) is untouched. Free space or point the "
                      "checkpoints elsewhere (ray.storage_path, TMPDIR)")
        else:
            detail = (f"cannot be written ({type(exc).__name__}: {exc}); nothing was replaced, the "
                      f"previous {what} (if any) is untouched")
        raise CheckpointError(run_id or "-", path, detail) from exc
    try:  # the rename itself survives a crash only once the folder is synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def load_state_file(path: str | os.PathLike, run_id: str = "", map_location="cpu", field: str = "checkpoint",
                    shown_as: str | None = None):
    """``torch.load(path, weights_only=True)``, or a :class:`CheckpointError` naming the file
    (``shown_as``: where it is stored, when ``path`` is a local copy) when it is truncated, corrupt or
    unsafe. For checkpoints outside MLflow: Ray Train's, local files."""
    import torch

    path = os.fspath(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        shown = shown_as or path
        # the path closes the message too: Ray Train keeps only the head and tail of a worker's error
        raise CheckpointError(run_id or "-", shown, "cannot be loaded (it is truncated, corrupt, or holds "
                              f"non-tensor objects; torch.load weights_only=True): {_short(exc)}. Delete "
                              f"{os.path.dirname(shown) or shown} to resume from an earlier checkpoint, or retrain",
                              field) from exc


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


class _NotJson(Exception):
    def __init__(self, where: str, what: str):
        self.where, self.what = where, what


def _json_data(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = to_dict(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise _NotJson(f"{where}[{k!r}]", f"has a {type(k).__name__} key; JSON keys must be strings")
            out[str(k)] = _json_data(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_json_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars/arrays, torch tensors
    if callable(tolist) and type(obj).__module__.split(".")[0] in ("numpy", "torch"):
        if getattr(obj, "dtype", None) is not None and str(obj.dtype) == "object":
            raise _NotJson(where, "is a numpy array of Python objects")
        value = obj.detach().cpu().tolist() if hasattr(obj, "detach") else tolist()
        return _json_data(value, where)
    raise _NotJson(where, f"is a {type(obj).__module__}.{type(obj).__qualname__}, which is not "
                          "JSON-serialisable (use numbers, strings, lists, dicts, numpy arrays)")


def _tensor_state(state_dict: Mapping[str, Any] | Any, run_id: str, file: str) -> dict[str, Any]:
    import torch

    if hasattr(state_dict, "state_dict") and callable(state_dict.state_dict):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(run_id, file, f"state_dict is a {type(state_dict).__name__}, not a mapping")
    sd = {}
    for k, v in _strip_prefix(state_dict).items():
        if not isinstance(k, str):
            raise CheckpointError(run_id, file, f"state_dict key {k!r} is not a string")
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(run_id, file, f"state_dict[{k!r}] is a {type(v).__name__}, not a tensor; "
                                                "put non-tensor data in extra")
        sd[k] = v.detach().cpu().contiguous()
    return sd


def save_checkpoint(client, run_id: str, state_dict: Mapping[str, Any] | Any, model_spec: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None, name: str = "model") -> str:
    """Write ``<name>/state.pt`` and ``<name>/spec.json`` into run ``run_id`` (see the module
    docstring). ``state_dict`` may be an ``nn.Module``. Everything is validated before the
    upload. Returns the artifact path of ``state.pt``."""
    import torch

    _check_name(name, "checkpoint name")
    state_file, spec_file = f"{name}/{STATE_FILE}", f"{name}/{SPEC_FILE}"
    sd = _tensor_state(state_dict, run_id, state_file)
    try:
        spec = {"format": CHECKPOINT_FORMAT, "model_spec": _json_data(dict(model_spec), "model_spec"),
                "extra": _json_data(dict(extra or {}), "extra")}
    except _NotJson as exc:
        raise CheckpointError(run_id, spec_file, f"{exc.where} {exc.what}") from None
    text = json.dumps(spec, indent=2, sort_keys=True, allow_nan=True).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="raypipe-ckpt-") as tmp:
        # staged atomically: a full disk gives a CheckpointError naming the file, never a
        # half-written state.pt uploaded as the run's checkpoint
        atomic_write(Path(tmp) / STATE_FILE, lambda f: torch.save(sd, f), run_id)
        atomic_write(Path(tmp) / SPEC_FILE, lambda f: f.write(text), run_id)
        client.log_artifacts(run_id, tmp, name)
    return state_file


# -- reading ------------------------------------------------------------------------------------


def check_checkpoint_files(files: set[str], run_id: str, name: str = "model", field: str = "checkpoint") -> bool:
    """Given the artifact paths listed under ``<name>/``, raise :class:`CheckpointError` unless
    they hold a whole checkpoint. Returns True for the current layout, False for a legacy
    ``model.pt``."""
    state_file, spec_file = f"{name}/{STATE_FILE}", f"{name}/{SPEC_FILE}"
    if state_file in files:
        if spec_file not in files:
            raise CheckpointError(run_id, spec_file, f"is missing (the checkpoint has {state_file} "
                                  "but not its spec); the run's checkpoint is incomplete", field)
        return True
    if f"{name}/{LEGACY_FILE}" in files:
        return False
    raise CheckpointError(run_id, state_file, "is missing: the run has no checkpoint "
                                              f"{name!r}", field)


def _list_files(client, run_id: str, name: str, field: str) -> set[str]:
    from mlflow.exceptions import MlflowException

    try:
        return {f.path for f in client.list_artifacts(run_id, name)}
    except (MlflowException, OSError) as exc:
        raise CheckpointError(run_id, f"{name}/", f"cannot list the artifacts: {exc}", field) from exc


def _download(tracking_uri: str, run_id: str, file: str, dst: str, field: str) -> Path:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        return Path(download_artifacts(run_id=run_id, artifact_path=file, dst_path=dst, tracking_uri=tracking_uri))
    except (MlflowException, OSError) as exc:
        raise CheckpointError(run_id, file, f"cannot be downloaded: {exc}", field) from exc


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + " ..."


def _torch_load(path: Path, run_id: str, file: str, field: str) -> Any:
    import torch

    try:
        # weights_only=True: tensors and plain containers only; any other pickled global (code
        # execution, arbitrary classes) is refused. Deliberately no fallback to a full unpickle.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        raise CheckpointError(run_id, file, "cannot be loaded safely (torch.load weights_only=True "
                              f"refused or failed; it is truncated, corrupt or holds non-tensor "
                              f"objects): {_short(exc)}", field) from exc


def _check_tensors(sd: Any, run_id: str, file: str, field: str) -> dict[str, Any]:
    import torch

    if not isinstance(sd, dict):
        raise CheckpointError(run_id, file, f"holds a {type(sd).__name__}, not a {{name: tensor}} dict", field)
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(run_id, file, f"entry {k!r} is a {type(v).__name__}, not a tensor", field)
    return sd


def _read_spec(path: Path, run_id: str, file: str, field: str) -> tuple[dict, dict]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(run_id, file, f"is not valid JSON: {_short(exc)}", field) from exc
    if not isinstance(spec, dict) or spec.get("format") != CHECKPOINT_FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise CheckpointError(run_id, file, f"is not a {CHECKPOINT_FORMAT} spec (format {got!r})", field)
    model_spec, extra = spec.get("model_spec"), spec.get("extra", {})
    if not isinstance(model_spec, dict) or not isinstance(extra, dict):
        raise CheckpointError(run_id, file, "needs 'model_spec' and 'extra' objects", field)
    return model_spec, extra


def load_checkpoint(client, tracking_uri: str, run_id: str, name: str = "model",
                    field: str = "checkpoint") -> dict[str, Any]:
    """``{"state_dict", "model_spec", "extra"}`` of run ``run_id``'s checkpoint ``name``,
    tensors on CPU. Raises :class:`CheckpointError` (naming ``field``, the run and the file) if a
    file is missing, unreadable, or not what it should be."""
    _check_name(name, "checkpoint name")
    current = check_checkpoint_files(_list_files(client, run_id, name, field), run_id, name, field)
    with tempfile.TemporaryDirectory(prefix="raypipe-load-") as tmp:
        if current:
            state_file, spec_file = f"{name}/{STATE_FILE}", f"{name}/{SPEC_FILE}"
            model_spec, extra = _read_spec(_download(tracking_uri, run_id, spec_file, tmp, field),
                                           run_id, spec_file, field)
            sd = _torch_load(_download(tracking_uri, run_id, state_file, tmp, field), run_id, state_file, field)
            return {"state_dict": _check_tensors(sd, run_id, state_file, field),
                    "model_spec": model_spec, "extra": extra}
        legacy = f"{name}/{LEGACY_FILE}"
        try:
            payload = _torch_load(_download(tracking_uri, run_id, legacy, tmp, field), run_id, legacy, field)
        except CheckpointError as exc:
            raise CheckpointError(run_id, legacy, f"{exc.detail}. This is a checkpoint of an older "
                                  "raypipe; retrain the stage (e.g. force_stages) to rewrite it as "
                                  f"{STATE_FILE} + {SPEC_FILE}", field) from exc
    if not (isinstance(payload, dict) and isinstance(payload.get("model_spec"), dict)
            and isinstance(payload.get("extra", {}), dict)):
        raise CheckpointError(run_id, legacy, "is not a raypipe checkpoint", field)
    return {"state_dict": _check_tensors(payload.get("state_dict"), run_id, legacy, field),
            "model_spec": payload["model_spec"], "extra": payload.get("extra", {})}
