"""Band sets and normalisation constants, named once (no magic indexes in loops)."""

from __future__ import annotations

# Sentinel-2 L1C as stored in SEN12MS / SEN12MS-CR: 13 bands, uint16, reflectance x 10000.
S2_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_SCALE = 10000.0
# The 10 "land" bands used by the SEN12MS reference classification code (B2-B8, B8A, B11, B12).
S2_LAND_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
# Bands s2cloudless's model takes, in its order.
S2CLOUDLESS_BANDS: tuple[str, ...] = ("B1", "B2", "B4", "B5", "B8", "B8A", "B9", "B10", "B11", "B12")

# Sentinel-1 GRD: VV, VH backscatter in dB.
S1_BANDS: tuple[str, ...] = ("VV", "VH")

# PlanetScope (M3M-CR): B, G, R, NIR, uint16 reflectance x 10000.
PLANET_BANDS: tuple[str, ...] = ("B", "G", "R", "NIR")
# GF-1 (WHU-OPT-SAR): R, G, B, NIR; GF-3 SAR: one band.
GF1_BANDS: tuple[str, ...] = ("R", "G", "B", "NIR")
GF3_BANDS: tuple[str, ...] = ("HH",)


def band_indexes(all_bands: tuple[str, ...], wanted: tuple[str, ...] | list[str]) -> list[int]:
    """0-based indexes of ``wanted`` in ``all_bands``; raises KeyError naming an unknown band."""
    index = {b: i for i, b in enumerate(all_bands)}
    missing = [b for b in wanted if b not in index]
    if missing:
        raise KeyError(f"unknown band(s) {missing}; available: {list(all_bands)}")
    return [index[b] for b in wanted]


# Per-band z-score constants published with the SEN12MS reference classification code.
SEN12MS_S1_MEAN = (-11.76858, -18.294598)
SEN12MS_S1_STD = (4.525339, 4.3586307)
SEN12MS_S2_LAND_MEAN = (1226.4215, 1137.3799, 1139.6792, 1350.9973, 1932.9058,
                        2211.1584, 2154.9846, 2409.1128, 2001.8622, 1356.0801)
SEN12MS_S2_LAND_STD = (741.6254, 740.883, 960.1045, 946.76056, 985.52747,
                       1082.4341, 1057.7628, 1136.1942, 1132.7898, 991.48016)
