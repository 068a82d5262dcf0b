"""Names and values MLflow accepts: tag names, run kinds, stage keys, config params, redaction.

Everything here is pure (no MLflow call, no torch), so the rules can be tested and reused by the
other tracking modules: :func:`stage_key` (the content key a stage is reused by),
:func:`config_params` (a config flattened into MLflow params, secrets redacted) and the small
helpers that make keys valid and values short enough for MLflow 3.17.

Redaction (:func:`redact`): the value of every key containing ``secret``, ``password``,
``passwd``, ``token``, ``key_id``, ``access_key``, ``private_key`` or ``credential``
(case-insensitive, anywhere in the dotted key) becomes ``***``; in every string, the user info
of a URI (``s3://AKIA..:wJal..@host`` -> ``s3://***@host``) and the values of secret-looking
query parameters (``?token=...``, ``X-Amz-Signature=...``) are replaced too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Mapping

from raypipe.config import flatten, to_dict

__all__ = [
    "TAG_KIND", "TAG_PIPELINE", "TAG_STAGE", "TAG_STAGE_KEY", "TAG_DATA_HASH", "TAG_INPUT_PREFIX",
    "TAG_REUSED_FROM", "TAG_PARENT_STAGE_RUN", "TAG_PARENT_REUSED", "TAG_PARENT", "TAG_ERROR",
    "KIND_PIPELINE", "KIND_STAGE", "KIND_STAGE_REUSED",
    "PARAM_VALUE_LIMIT", "TAG_VALUE_LIMIT", "KEY_LIMIT", "PARAMS_PER_BATCH", "METRICS_PER_BATCH",
    "TRUNCATION_MARKER", "REDACTED", "stage_key", "config_params", "redact", "redact_text",
    "is_secret_key",
]

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
TAG_ERROR = "raypipe.error"
KIND_PIPELINE = "pipeline"
KIND_STAGE = "stage"
KIND_STAGE_REUSED = "stage-reused"

# MLflow 3.17 limits (mlflow/utils/validation.py).
PARAM_VALUE_LIMIT = 6000
TAG_VALUE_LIMIT = 8000
KEY_LIMIT = 250
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
TRUNCATION_MARKER = "...[truncated {n} chars; full value in config.yaml]"
REDACTED = "***"

_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")   # stage / input names (used inside filter strings)
_KEY_BAD = re.compile(r"[^/\w.\- :]")           # chars MLflow rejects in param/metric/tag keys
_SECRET_WORDS = r"secret|passw(?:or)?d|token|key_id|access_key|accesskey|private_key|credential"
_SECRET_KEY = re.compile(_SECRET_WORDS, re.IGNORECASE)
# scheme://userinfo@host : the whole user info goes (a bare user name may itself be a token)
_URI_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]+@")
_SECRET_QUERY = re.compile(r"([?&;](?:[^=&;#\s]*(?:" + _SECRET_WORDS + r"|signature)[^=&;#\s]*|sig)=)[^&;#\s]*",
                           re.IGNORECASE)


# -- plain data ---------------------------------------------------------------------------------


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


# -- stage keys ---------------------------------------------------------------------------------


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


# -- redaction ----------------------------------------------------------------------------------


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) key names a secret: it contains secret/password/token/key_id/
    access_key/private_key/credential, case-insensitive."""
    return bool(_SECRET_KEY.search(str(key)))


def redact_text(text: str) -> str:
    """``text`` with URI user info (``user:pass@``) and secret-looking query values replaced by
    ``***``."""
    text = _URI_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, text)


def redact(obj: Any) -> Any:
    """Plain data (see :func:`_plain`) with secrets replaced by ``***``: the value of every
    secret-named key (at any depth, in lists too) and credentials inside strings
    (:func:`redact_text`)."""
    obj = _plain(obj)
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


# -- params and keys ----------------------------------------------------------------------------


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


def _safe_param(key: str, value: Any) -> tuple[str, str]:
    """``(key, value)`` of one param as logged: key made valid, value redacted (secret-named key
    or credentials inside), stringified and truncated."""
    if is_secret_key(key) and value not in (None, ""):
        value = REDACTED
    return _safe_key(key), _truncate(_param_value(redact(value)), PARAM_VALUE_LIMIT)


def config_params(config: Mapping[str, Any] | Any) -> dict[str, str]:
    """The flattened config as MLflow params: dotted keys, values as strings (lists/dicts as JSON),
    values longer than 6000 chars truncated with a marker, keys made valid for MLflow, secrets
    redacted (see :func:`redact`: secret-named keys and URI credentials give ``***``)."""
    flat = flatten(redact(config) or {})
    out: dict[str, str] = {}
    for k, v in flat.items():
        key, value = _safe_param(k, v)
        base, i = key, 2
        while key in out:  # two raw keys sanitised to the same one
            key, i = f"{base}_{i}", i + 1
        out[key] = value
    return out


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise ValueError(f"{what} {name!r} must match [A-Za-z0-9_.-]+")
    return name
