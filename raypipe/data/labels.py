"""Class schemes and label mappings (SEN12MS simplified IGBP, ESA WorldCover → CloudSeg, WHU-OPT-SAR).

Class schemes are data, not hard-wired: a user can bring a label table (sample id → class name)
and a class list (:func:`read_label_table`), and everything downstream follows it.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pandas as pd

from raypipe import storage
from raypipe.errors import ConfigError

# SEN12MS "simplified IGBP" scheme (10 classes) and the IGBP codes (1-17) each class gathers.
SIMPLIFIED_IGBP: tuple[str, ...] = (
    "Forest", "Shrubland", "Savanna", "Grassland", "Wetland",
    "Cropland", "Urban", "Snow/Ice", "Barren", "Water",
)
IGBP_TO_SIMPLIFIED: dict[int, int] = {
    1: 0, 2: 0, 3: 0, 4: 0, 5: 0,  # forests
    6: 1, 7: 1,  # shrublands
    8: 2, 9: 2,  # savannas
    10: 3,  # grassland
    11: 4,  # wetland
    12: 5, 14: 5,  # cropland, cropland/natural mosaic
    13: 6,  # urban
    15: 7,  # snow/ice
    16: 8,  # barren
    17: 9,  # water
}
_IGBP_LUT = np.full(256, -1, dtype=np.int16)
for _code, _cls in IGBP_TO_SIMPLIFIED.items():
    _IGBP_LUT[_code] = _cls


def simplified_igbp_majority(lc: np.ndarray) -> int:
    """Scene label of a SEN12MS ``lc`` tile: the simplified-IGBP class covering most pixels (-1 if none)."""
    igbp = np.asarray(lc[0] if lc.ndim == 3 else lc).astype(np.int64).ravel()
    cls = _IGBP_LUT[np.clip(igbp, 0, 255)]
    cls = cls[cls >= 0]
    if cls.size == 0:
        return -1
    return int(np.bincount(cls, minlength=len(SIMPLIFIED_IGBP)).argmax())


def igbp_probabilities_to_simplified(probs: np.ndarray) -> np.ndarray:
    """17 IGBP class probabilities (official SEN12MS label file) → 10 simplified-IGBP probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.zeros(len(SIMPLIFIED_IGBP))
    for code, cls in IGBP_TO_SIMPLIFIED.items():
        out[cls] += probs[code - 1]
    return out


# ESA WorldCover codes → CloudSeg 6-class level-1 scheme (255 = ignore).
CLOUDSEG_CLASSES: tuple[str, ...] = ("Forest", "Rangeland", "Agriculture", "Urban", "Barren", "Water")
IGNORE_INDEX = 255
WORLDCOVER_TO_CLOUDSEG: dict[int, int] = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 80: 5, 90: 5,
                                          70: IGNORE_INDEX, 95: IGNORE_INDEX, 100: IGNORE_INDEX}
_WC_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _code, _cls in WORLDCOVER_TO_CLOUDSEG.items():
    _WC_LUT[_code] = _cls

# WHU-OPT-SAR labels 0,10,…,70 → 0…7.
WHU_CLASSES: tuple[str, ...] = ("background", "farmland", "city", "village", "water", "forest", "road", "others")
_WHU_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _i in range(8):
    _WHU_LUT[_i * 10] = _i


def map_label_map(label: np.ndarray, scheme: str) -> np.ndarray:
    """Map a raw label raster to training indices for ``scheme`` ('worldcover' or 'whu')."""
    lut = {"worldcover": _WC_LUT, "whu": _WHU_LUT}.get(scheme)
    if lut is None:
        raise ConfigError("data.label_scheme", f"unknown label-map scheme '{scheme}'")
    raw = np.asarray(label[0] if label.ndim == 3 else label)
    return lut[np.clip(raw.astype(np.int64), 0, 255)]


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


def resolve_label(value: object, classes: list[str], field: str) -> int:
    """A label table value (class name, index, or probability vector) → class index."""
    if isinstance(value, (list, tuple, np.ndarray)):
        probs = np.asarray(value, dtype=float)
        if probs.size == 17 and len(classes) == len(SIMPLIFIED_IGBP):
            probs = igbp_probabilities_to_simplified(probs)
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
