"""The dataset manifest: one Parquet row per sample, the contract between ``prepare_data`` and training.

Columns (``MANIFEST_COLUMNS``): identity (``sample_id``, ``dataset``, ``domain``, ``split``,
``region``, ``season``, ``scene``, ``patch``), one URI per modality (``optical_uri`` cloud-free
optical, ``optical_cloudy_uri`` cloudy optical, ``sar_uri``, ``label_uri`` lc tile or label map,
``cloud_mask_uri``), the scene ``label`` (-1 when unknown / segmentation) and ``label_name``,
the window inside the file (``row``, ``col``, ``height``, ``width``; a whole chip is row = col = 0),
the band counts the tiles must have (``optical_bands``, ``sar_bands``) and ``cloud_fraction``
(NaN unless computed with ``--with-cloud-stats``). Empty URIs are "" (modality absent).
Dataset-level facts (class list, label kind) live in the Parquet schema metadata.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe import storage
from raypipe.errors import ManifestError

URI_COLUMNS = ("optical_uri", "optical_cloudy_uri", "sar_uri", "label_uri", "cloud_mask_uri")
MANIFEST_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("dataset", pa.string()),
    ("domain", pa.string()),
    ("split", pa.string()),
    ("region", pa.string()),
    ("season", pa.string()),
    ("scene", pa.string()),
    ("patch", pa.string()),
    *[(c, pa.string()) for c in URI_COLUMNS],
    ("label", pa.int32()),
    ("label_name", pa.string()),
    ("row", pa.int32()),
    ("col", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("optical_bands", pa.int32()),
    ("sar_bands", pa.int32()),
    ("cloud_fraction", pa.float32()),
])
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)
_DEFAULTS = {"domain": "", "region": "", "season": "", "scene": "", "patch": "", "label": -1,
             "label_name": "", "row": 0, "col": 0, "optical_bands": 0, "sar_bands": 0,
             "cloud_fraction": np.nan, **{c: "" for c in URI_COLUMNS}}


def make_frame(rows: list[dict], meta: dict | None = None) -> pd.DataFrame:
    """Rows (dicts with at least sample_id, dataset, split, height, width) → a manifest DataFrame."""
    df = pd.DataFrame(rows)
    for col, default in _DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
        else:
            df[col] = df[col].fillna(default) if not isinstance(default, float) else df[col]
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError("<new>", f"rows lack required columns {missing}")
    df = df[list(MANIFEST_COLUMNS)].sort_values("sample_id", kind="stable").reset_index(drop=True)
    dup = df["sample_id"].duplicated()
    if dup.any():
        raise ManifestError("<new>", f"duplicate sample ids, e.g. {df['sample_id'][dup].iloc[0]!r}")
    df.attrs["raypipe"] = dict(meta or {})
    return df


def write_manifest(df: pd.DataFrame, uri: str) -> str:
    """Write ``df`` as Parquet to ``uri`` (local or object storage); returns its content hash."""
    table = pa.Table.from_pandas(df, schema=MANIFEST_SCHEMA, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"raypipe"] = json.dumps(df.attrs.get("raypipe", {}), sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(uri, buf.getvalue())
    return content_hash(df)


def read_manifest(uri: str) -> pd.DataFrame:
    """Read and check a manifest; the dataset metadata is in ``df.attrs['raypipe']``."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as exc:
        raise ManifestError(storage.redact(uri), "file does not exist (run jobs/prepare_data.py first)") from exc
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:
        raise ManifestError(storage.redact(uri), f"not a readable Parquet file ({exc})") from exc
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(storage.redact(uri), f"missing columns {missing}")
    df = table.to_pandas()
    raw = (table.schema.metadata or {}).get(b"raypipe", b"{}")
    df.attrs["raypipe"] = json.loads(raw)
    return df


def content_hash(df: pd.DataFrame) -> str:
    """A stable hash of a manifest's rows and metadata (used for stage keys and lineage)."""
    h = hashlib.sha256()
    h.update(json.dumps(df.attrs.get("raypipe", {}), sort_keys=True).encode())
    h.update(pd.util.hash_pandas_object(df[list(MANIFEST_COLUMNS)], index=False).values.tobytes())
    return h.hexdigest()[:16]


def check_files_exist(df: pd.DataFrame, columns: tuple[str, ...] = URI_COLUMNS) -> list[tuple[str, str, str]]:
    """(sample_id, column, uri) for every referenced file that does not exist, by listing each folder once."""
    listed: dict[str, set[str]] = {}
    missing = []
    for col in columns:
        for sid, uri in zip(df["sample_id"], df[col]):
            if not uri:
                continue
            parent = uri.rsplit("/", 1)[0]
            if parent not in listed:
                fs, path = storage.filesystem(parent)
                try:
                    names = fs.ls(path, detail=False)
                except FileNotFoundError:
                    names = []
                listed[parent] = {n.rsplit("/", 1)[-1] for n in names}
            if uri.rsplit("/", 1)[-1] not in listed[parent]:
                missing.append((sid, col, uri))
    return missing
