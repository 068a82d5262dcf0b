"""Where the generated benchmark puts its files, how tiles are numbered, and its random streams.

The reader side (:mod:`raypipe.data.datasets.synthetic`) uses the same constants, so the writer and
the manifest builder cannot disagree about the layout.
"""

from __future__ import annotations

from raypipe.data.datasets.synthetic import METADATA_FILE, ROIS  # noqa: F401  (the reader's constants)

SYNTHETIC_VERSION = 2  # bump whenever the content generated for a given seed changes

TEST_SCENE_FRACTION = 0.2
DEFAULT_SCENE_SIZE = 50  # patches per scene when there are tiles enough (see writer.default_scene_size)
MIN_SCENES = 5  # scenes per domain the default scene size aims for: 1 / TEST_SCENE_FRACTION
PIXEL_SIZE_M = 10.0

DOMAINS: tuple[str, ...] = ("source", "target")
# Path templates per domain and modality, relative to <out>; {roi}, {scene}, {patch}.
LAYOUT: dict[str, dict[str, str]] = {
    "source": {
        "s1": "source/{roi}/s1_{scene}/{roi}_s1_{scene}_p{patch}.tif",
        "s2": "source/{roi}/s2_{scene}/{roi}_s2_{scene}_p{patch}.tif",
        "lc": "source/{roi}/lc_{scene}/{roi}_lc_{scene}_p{patch}.tif",
    },
    "target": {
        "s1": "target/{roi}_s1/s1_{scene}/{roi}_s1_{scene}_p{patch}.tif",
        "s2_cloudy": "target/{roi}_s2_cloudy/s2_cloudy_{scene}/{roi}_s2_cloudy_{scene}_p{patch}.tif",
        "s2": "target/{roi}_s2/s2_{scene}/{roi}_s2_{scene}_p{patch}.tif",
        "lc": "target/{roi}_lc/lc_{scene}/{roi}_lc_{scene}_p{patch}.tif",
        "cloudmask": "target/{roi}_cloudmask/cloudmask_{scene}/{roi}_cloudmask_{scene}_p{patch}.tif",
    },
}
SAMPLE_ID_FORMAT = "{roi}_{scene}_p{patch}"

# Random streams: every draw is seeded by (seed, stream, domain, index) so tiles are
# independent of each other and of the order or process they are rendered in.
_STREAM_PLAN, _STREAM_TILE, _STREAM_GEO, _STREAM_GAP = 1, 2, 3, 4
_DOMAIN_CODE = {"source": 0, "target": 1}
