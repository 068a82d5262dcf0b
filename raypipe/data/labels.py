"""Label tools every dataset shares: user label tables, class-index resolution, label-map lookup tables.

Class schemes are data, not hard-wired: a user can bring a label table (sample id → class name)
and a class list (:func:`read_label_table`), and everything downstream follows it. Each dataset's
own scheme (SEN12MS simplified IGBP, M3M-CR's WorldCover → CloudSeg, WHU-OPT-SAR's 0…70 codes)
lives in its file under :mod:`raypipe.data.datasets`.
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Callable

import numpy as np
import pandas as pd

from raypipe import storage
from raypipe.errors import ConfigError

IGNORE_INDEX = 255  # label-map value that the loss and metrics ignore


def lookup_table(mapping: dict[int, int], fill: int, dtype=np.uint8) -> np.ndarray:
    """A 256-entry lookup table: ``table[code] = mapping[code]``, ``fill`` for every other code."""
    table = np.full(256, fill, dtype=dtype)
    for code, cls in mapping.items():
        table[code] = cls
    return table


def apply_lookup(label: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map a raw (1, H, W) or (H, W) label raster through a :func:`lookup_table` (codes clipped to 0…255)."""
    raw = np.asarray(label[0] if label.ndim == 3 else label)
    return table[np.clip(raw.astype(np.int64), 0, 255)]


def read_label_table(uri: str, classes: list[str] | None = None) -> tuple[dict[str, object], list[str] | None]:
    """Read a user label table: CSV/Parquet/JSON (sample id → class name or index) or the official
    SEN12MS probability-label pickle (file name → 17 IGBP probabilities).

    Returns (mapping key → value, class list). Keys are matched against sample ids, then file names.
    """
    data = storage.read_bytes(uri)
    lower = uri.lower()
    if lower.endswith((".pkl", ".pickle")):
        obj = pickle.loads(data)  # the official SEN12MS label file is a pickled dict
        if not isinstance(obj, dict):
            raise ConfigError("--labels", f"{uri}: expected a pickled dict of file name → probabilities")
        return obj, classes
    if lower.endswith(".json"):
        obj = json.loads(data)
        if isinstance(obj, dict) and "labels" in obj:
            return dict(obj["labels"]), obj.get("classes", classes)
        return dict(obj), classes
    if lower.endswith(".parquet"):
        df = pd.read_parquet(io.BytesIO(data))
    else:
        df = pd.read_csv(io.BytesIO(data))
    cols = [c.lower() for c in df.columns]
    if "sample_id" not in cols or not ({"class", "label", "class_name"} & set(cols)):
        raise ConfigError("--labels", f"{uri}: needs columns 'sample_id' and 'class' (or 'label'); has {list(df.columns)}")
    df.columns = cols
    value_col = next(c for c in ("class", "class_name", "label") if c in cols)
    mapping = dict(zip(df["sample_id"].astype(str), df[value_col]))
    if classes is None:
        values = df[value_col]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            classes = sorted(values.astype(str).unique().tolist())
    return mapping, classes


def resolve_label(value: object, classes: list[str], field: str,
                  reduce_probabilities: Callable[[np.ndarray, list[str]], np.ndarray] | None = None) -> int:
    """A label table value (class name, index, or probability vector) → class index.

    ``reduce_probabilities(probs, classes)`` lets a dataset map a probability vector over its
    source scheme to ``classes`` first (SEN12MS: 17 IGBP probabilities → 10 simplified IGBP)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        probs = np.asarray(value, dtype=float)
        if reduce_probabilities is not None:
            probs = reduce_probabilities(probs, classes)
        if probs.size != len(classes):
            raise ConfigError(field, f"probability vector of length {probs.size} for {len(classes)} classes")
        return int(np.argmax(probs))
    if isinstance(value, (int, np.integer)):
        if not 0 <= int(value) < len(classes):
            raise ConfigError(field, f"class index {value} outside 0..{len(classes) - 1}")
        return int(value)
    name = str(value)
    if name not in classes:
        raise ConfigError(field, f"class '{name}' is not in the class list {classes}")
    return classes.index(name)
