"""What each supported dataset's tiles look like: bands, dtypes, task, classes, normalisation.

The pipeline checks every tile it reads against its dataset's spec (band count, dtype, size) and
raises a :class:`~raypipe.errors.BadTileError` naming the file when a tile does not match.
"""

from __future__ import annotations

from dataclasses import dataclass

from raypipe import bands as B
from raypipe.data.labels import CLOUDSEG_CLASSES, SIMPLIFIED_IGBP, WHU_CLASSES
from raypipe.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "classification" | "segmentation"
    optical_bands: tuple[str, ...]
    optical_dtypes: tuple[str, ...]
    optical_scale: float  # raw value that means reflectance 1.0
    sar_bands: tuple[str, ...]
    sar_dtypes: tuple[str, ...]
    classes: tuple[str, ...]
    label_scheme: str = ""  # label-map mapping for segmentation ("worldcover", "whu")
    default_optical_selection: tuple[str, ...] | None = None  # bands fed to models by default
    is_sentinel2: bool = False  # cloud *detection* needs the 13 Sentinel-2 L1C bands
    aux_grid: float = 1.0  # SAR / label pixels per optical pixel (M3M-CR: 10 m vs 3 m = 0.3)


_S2 = dict(optical_bands=B.S2_BANDS, optical_dtypes=("uint16",), optical_scale=B.S2_SCALE,
           sar_bands=B.S1_BANDS, sar_dtypes=("float32", "float64"), classes=SIMPLIFIED_IGBP,
           default_optical_selection=B.S2_LAND_BANDS, is_sentinel2=True)

SPECS: dict[str, DatasetSpec] = {
    "sen12ms": DatasetSpec("sen12ms", "classification", **_S2),
    "sen12ms-cr": DatasetSpec("sen12ms-cr", "classification", **_S2),
    "synthetic": DatasetSpec("synthetic", "classification", **_S2),
    "m3m-cr": DatasetSpec("m3m-cr", "segmentation", optical_bands=B.PLANET_BANDS, optical_dtypes=("uint16",),
                          optical_scale=10000.0, sar_bands=B.S1_BANDS, sar_dtypes=("float32", "float64"),
                          classes=CLOUDSEG_CLASSES, label_scheme="worldcover", aux_grid=0.3),
    "whu-opt-sar": DatasetSpec("whu-opt-sar", "segmentation", optical_bands=B.GF1_BANDS,
                               optical_dtypes=("uint8", "uint16"), optical_scale=255.0, sar_bands=B.GF3_BANDS,
                               sar_dtypes=("uint8", "uint16", "float32"), classes=WHU_CLASSES, label_scheme="whu"),
}


def get_spec(name: str, field: str = "--dataset") -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigError(field, f"unknown dataset '{name}' (known: {sorted(SPECS)})") from None
