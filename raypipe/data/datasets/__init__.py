"""The datasets raypipe reads, one file each, and the open registry they register into.

==================  ==========================================  ==========================================
name                file                                        what
==================  ==========================================  ==========================================
``sen12ms``         :mod:`raypipe.data.datasets.sen12ms`        S1 + S2 + MODIS land cover, scene classes
``sen12ms-cr``      :mod:`raypipe.data.datasets.sen12ms_cr`     SEN12MS places with cloudy S2 (real clouds)
``synthetic``       :mod:`raypipe.data.datasets.synthetic`      the generated cloudy-transfer benchmark
``m3m-cr``          :mod:`raypipe.data.datasets.m3mcr`          PlanetScope + S1 + WorldCover, segmentation
``whu-opt-sar``     :mod:`raypipe.data.datasets.whu_opt_sar`    GF-1 + GF-3 scenes, segmentation, windowed
==================  ==========================================  ==========================================

Each file's docstring is the dataset's page (what it is, bands, layout on disk, labels, splits,
citation). A dataset is a :class:`~raypipe.data.datasets.base.DatasetSpec`: its fields say what its
tiles look like, its methods scan its layout into manifest rows and map its labels; the rest of
raypipe asks the dataset object, never tests its name. :func:`get_spec` finds one by name
(``DATASETS`` / ``SPECS``); a new dataset file calls :func:`register` (see
:mod:`~raypipe.data.datasets.base`).
"""

from raypipe.data.datasets.base import (
    DATASETS,
    BandStats,
    DatasetSpec,
    PrepareOptions,
    Quarantine,
    get_spec,
    register,
)
from raypipe.data.datasets.sen12ms import SEN12MS, Sen12MS  # registers "sen12ms"
from raypipe.data.datasets.sen12ms_cr import SEN12MS_CR, Sen12MSCR  # registers "sen12ms-cr"
from raypipe.data.datasets.synthetic import SYNTHETIC, SyntheticBenchmark  # registers "synthetic"
from raypipe.data.datasets.m3mcr import M3M_CR, M3MCR  # registers "m3m-cr"
from raypipe.data.datasets.whu_opt_sar import WHU_OPT_SAR, WHUOptSar  # registers "whu-opt-sar"

SPECS = DATASETS  # the registry under its older name (jobs/prepare_data.py: --dataset choices)

__all__ = [
    "DATASETS", "SPECS", "BandStats", "DatasetSpec", "PrepareOptions", "Quarantine", "get_spec", "register",
    "SEN12MS", "SEN12MS_CR", "SYNTHETIC", "M3M_CR", "WHU_OPT_SAR",
    "Sen12MS", "Sen12MSCR", "SyntheticBenchmark", "M3MCR", "WHUOptSar",
]
