"""What a dataset is to raypipe, and the open registry of datasets.

A dataset is one :class:`DatasetSpec` object (a small, frozen, picklable value that travels to
every Ray worker inside the pipeline's plan). Its fields say what its tiles look like (bands,
dtypes, task, classes, normalisation constants, how reads are cut); its methods do what only
that dataset knows:

* :meth:`DatasetSpec.manifest_rows` scans an official layout and returns one manifest row per
  sample (what :func:`raypipe.data.prepare.prepare` writes);
* :meth:`DatasetSpec.map_labels` maps a raw label raster to training indices (segmentation).

Nothing else in raypipe tests a dataset's *name*: the pipeline and ``prepare`` ask the dataset
object. To add a dataset, write ``raypipe/data/datasets/<name>.py`` with a module docstring that
is its user's page, subclass :class:`DatasetSpec`, and :func:`register` an instance::

    class MyData(DatasetSpec):
        def manifest_rows(self, root, quarantine, options):
            ...
            return rows, list(self.classes)

    MY_DATA = register(MyData("my-data", "segmentation", optical_bands=..., ...))

(and import the module from :mod:`raypipe.data.datasets` for it to be known by name).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raypipe.errors import BadTileError, ConfigError


@dataclass(frozen=True)
class BandStats:
    """Published per-band z-score constants (``bands[i]`` has mean ``mean[i]``, std ``std[i]``)."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def covers(self, bands: tuple[str, ...] | list[str]) -> bool:
        return set(bands) <= set(self.bands)

    def select(self, bands: tuple[str, ...] | list[str]) -> tuple[list[float], list[float]]:
        """(means, stds) of ``bands``, in that order (every band must be :meth:`covers` ed)."""
        idx = [self.bands.index(b) for b in bands]
        return [self.mean[i] for i in idx], [self.std[i] for i in idx]


@dataclass(frozen=True)
class PrepareOptions:
    """What ``prepare`` passes to :meth:`DatasetSpec.manifest_rows` besides the root (each dataset
    uses the ones that apply to it)."""

    labels: str | None = None  # label table (sample id -> class) or the SEN12MS probability-label pickle
    labels_root: str | None = None  # a SEN12MS root whose lc tiles label SEN12MS-CR samples
    classes: list[str] | None = None  # fixed class list (and order) for a label table
    tile_size: int = 256  # windowed datasets: tile side cut from each scene
    split_list: str | None = None  # a file naming the test scenes


class Quarantine:
    """Samples that cannot be used, collected while scanning (``on_bad_tile="skip"``) or raised at
    once as a :class:`BadTileError` naming the file (``"error"``)."""

    def __init__(self, on_bad_tile: str):
        if on_bad_tile not in ("error", "skip"):
            raise ConfigError("on_bad_tile", f"must be 'error' or 'skip', got {on_bad_tile!r}")
        self.skip = on_bad_tile == "skip"
        self.items: list[dict] = []

    def bad(self, sample: str, uri: str, reason: str, detail: str) -> None:
        if not self.skip:
            raise BadTileError(uri, reason, f"{detail} (sample {sample})")
        self.items.append({"sample_id": sample, "uri": uri, "reason": reason, "detail": detail})


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset's tiles look like; subclasses add how to scan it and map its labels.

    The pipeline checks every tile it reads against these fields (band count, dtype, size) and
    raises a :class:`~raypipe.errors.BadTileError` naming the file when a tile does not match.
    """

    name: str
    task: str  # "classification" | "segmentation"
    optical_bands: tuple[str, ...]
    optical_dtypes: tuple[str, ...]
    optical_scale: float  # raw value that means reflectance 1.0
    sar_bands: tuple[str, ...]
    sar_dtypes: tuple[str, ...]
    classes: tuple[str, ...]
    default_optical_selection: tuple[str, ...] | None = None  # bands fed to models by default
    is_sentinel2: bool = False  # cloud *detection* needs the 13 Sentinel-2 L1C bands
    aux_grid: float = 1.0  # SAR / label pixels per optical pixel (M3M-CR: 10 m vs 3 m = 0.3)
    windowed_reads: bool = False  # samples are windows (row, col, height, width) of large scene files
    optical_stats: BandStats | None = None  # published z-score constants of (some) optical bands
    sar_stats: BandStats | None = None  # published z-score constants of the SAR bands
    sar_range: tuple[float, float] = (0.0, 255.0)  # SAR values min-max scaling maps to 0..1 (S1 dB: -25..0)
    # The dataset's cloud masks are the truth a simulator drew (the generated benchmark), not a product a
    # user would have (M3M-CR's masks): training on them is an oracle; evaluation buckets use them.
    masks_are_truth: bool = False

    def manifest_rows(self, root: str, quarantine: Quarantine, options: PrepareOptions) -> tuple[list[dict], list[str]]:
        """Scan ``root`` (path or URI) in this dataset's official layout: (manifest rows, class list).

        A row is a dict of :data:`raypipe.data.manifest.MANIFEST_COLUMNS` values (at least
        ``sample_id``, ``dataset``, ``split``); ``prepare`` fills tile sizes it lacks. Samples with a
        missing file go to ``quarantine`` (which raises unless skipping). Raise
        :class:`~raypipe.errors.DatasetNotFoundError` when ``root`` holds none of its files."""
        raise NotImplementedError(f"dataset {self.name!r} cannot scan a layout")

    def map_labels(self, label: np.ndarray) -> np.ndarray:
        """A raw label raster (1, H, W) or (H, W) → training class indices (H, W) (segmentation)."""
        raise ConfigError("data", f"dataset {self.name!r} has no label maps (task {self.task!r})")


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Make ``spec`` known by its name (to ``prepare``, ``get_spec``, manifests); returns it."""
    old = DATASETS.get(spec.name)
    if old is not None and type(old) is not type(spec):
        raise ConfigError("dataset", f"dataset name {spec.name!r} is already registered by {type(old).__qualname__}")
    DATASETS[spec.name] = spec
    return spec


def get_spec(name: str, field: str = "--dataset") -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(field, f"unknown dataset '{name}' (known: {sorted(DATASETS)})") from None
