"""A generated cloudy-transfer benchmark in the SEN12MS / SEN12MS-CR layouts (DESIGN §7b).

No real SEN12MS is reachable from the build machines, so this package *generates* a
scene-classification task with the structure of the MTTS paper's problem and writes it as
real GeoTIFFs (UTM CRS, 10 m transform) in the official layouts, so that the real readers,
the manifest scanners and the object-store path (``s3://`` through :mod:`raypipe.storage`)
are exercised end to end.

**Results on it are results on this synthetic benchmark, never the paper's numbers.**

The task
--------
* 10 classes, the simplified IGBP names :data:`CLASSES` (Forest … Water). Each tile has a
  dominant class, its label, over 60–85 % of its area, plus 1–3 smooth blobs of other
  classes; the ``lc`` IGBP band holds :data:`CLASS_TO_IGBP` codes, so the usual "argmax of
  simplified-IGBP fractions" rule recovers the label.
* **Optical** (Sentinel-2 L1C-like, 13 bands): a class spectrum (:data:`S2_SPECTRA`: red
  edge and high NIR for vegetation, low NIR water, bright flat urban, very bright visible
  snow with low SWIR, high SWIR barren, wetland = per-pixel mix of marsh vegetation and
  water, cropland / grassland / savanna close but distinguishable), spatial texture,
  band-correlated texture at several scales, per-tile illumination, path radiance and water
  vapour, native-resolution smoothing of the 20/60 m bands, band-correlated noise; B10 (cirrus)
  stays at 8-40 x 1e-4 over the ground (values calibrated on DESIGN 7b / 2; see
  :mod:`~raypipe.synthetic.spectra`). Optical is the stronger modality when clear.
* **SAR** (Sentinel-1 GRD-like, VV/VH dB): class backscatter (:data:`S1_BACKSCATTER_DB`:
  water very low, urban very high, forest high VH), texture, a per-tile offset (moisture,
  incidence angle) and multiplicative gamma speckle (:data:`SAR_LOOKS` looks). It separates
  water / urban / forest / snow / barren but confuses cropland, grassland, savanna and
  shrubland: SAR is the weaker modality overall, but unaffected by clouds.
* **Domain gap**: the *source* domain (``ROIs1158_spring``) uses the reference spectra; the
  *target* domain (``ROIs1970_fall``) applies per-band gains and offsets, class-conditional
  spectral shifts (per class, per spectral region: visible, red edge/NIR, SWIR) to S2 and a
  per-polarisation plus class-conditional dB shift to S1 (well under SAR's class separation). The parameters are drawn from ``seed`` and recorded in
  ``synthetic.json`` (:class:`DomainGap`).
* **Clouds on the target only**: the cloud-free target S2 is passed through
  :func:`raypipe.clouds.simulate.simulate_clouds` with a coverage drawn per tile from
  :class:`raypipe.clouds.simulate.CoverageDistribution` (about a third each clear, partly,
  fully cloudy), both seeded by the tile's sample id and the salt ``synthetic-seed<seed>``
  (recorded as ``clouds.salt``); the simulator gives the opacity and mask, the cloud's own
  reflectance is a thick-cloud spectrum (``spectra.CLOUD_SPECTRUM``), not white. The simulated cloud mask is written as ground truth. A
  cloudy target tile has no cloud-free reference unless ``with_reference`` is set. Target
  labels (``lc``) exist for evaluation only.

Layout (``<out>`` is a local folder, ``file://`` or ``s3://`` URI)::

    <out>/source/ROIs1158_spring/s1_<scene>/ROIs1158_spring_s1_<scene>_p<patch>.tif   2 x float32  VV, VH dB
    <out>/source/ROIs1158_spring/s2_<scene>/ROIs1158_spring_s2_<scene>_p<patch>.tif   13 x uint16  B1..B12 (incl. B8A, B10), reflectance x 10000
    <out>/source/ROIs1158_spring/lc_<scene>/ROIs1158_spring_lc_<scene>_p<patch>.tif   4 x uint16   IGBP, LCCS-LC, LCCS-LU, LCCS-SH
    <out>/target/ROIs1970_fall_s1/s1_<scene>/ROIs1970_fall_s1_<scene>_p<patch>.tif
    <out>/target/ROIs1970_fall_s2_cloudy/s2_cloudy_<scene>/ROIs1970_fall_s2_cloudy_<scene>_p<patch>.tif
    <out>/target/ROIs1970_fall_s2/s2_<scene>/ROIs1970_fall_s2_<scene>_p<patch>.tif     only with with_reference
    <out>/target/ROIs1970_fall_lc/lc_<scene>/ROIs1970_fall_lc_<scene>_p<patch>.tif     evaluation labels
    <out>/target/ROIs1970_fall_cloudmask/cloudmask_<scene>/ROIs1970_fall_cloudmask_<scene>_p<patch>.tif  1 x uint8 0/1
    <out>/synthetic.json                                                               written last

Tile ``i`` (0-based, per domain) lies in scene ``i // scene_size + 1`` (scenes start at 1)
as patch ``i % scene_size`` (patches start at 0 in each scene); its sample id is
``<ROI>_<scene>_p<patch>``, e.g. ``ROIs1970_fall_12_p7``. All patches of a scene share one
UTM zone (``EPSG:326xx``) and lie on a grid of adjacent tiles; scenes differ. About
:data:`TEST_SCENE_FRACTION` of the scenes of each domain are test scenes (listed in
``synthetic.json`` as ``test_scenes``), the rest train; labels are assigned so that each
source split is balanced over the 10 classes; the target has a label shift (a geometric class prior,
4x max/min, ranks drawn from the seed: :func:`~raypipe.synthetic.scene.class_prior`, recorded as
``class_prior``), with every class at least once in every split of >= 10 tiles.

Parameters: ``tiles`` per domain (>= 10), tile ``size`` in pixels (>= 16), ``seed``
(>= 0), cloud ``preset`` (thin, thick, fog, shadow), ``scene_size`` (patches per scene; at
least 2 scenes per domain are needed), ``with_reference``, ``workers`` (processes; default
all usable cores). Every tile is a pure function of ``(seed, domain, tile index)`` and the
layout parameters: the output does not depend on ``workers``.

``synthetic.json`` holds the version, the parameters, the classes and their IGBP codes,
the test scenes per domain, per-split class counts, the cloud-coverage summary (clear
< 0.1 <= partly <= 0.9 < full, on the written mask), the domain-gap parameters, the layout
templates and one record per tile (id, scene, patch, split, label, dominant fraction and,
for the target, cloud fraction).

Parameters: ``scene_size`` defaults to 50 patches per scene, or ``tiles // 5`` when 50 would
leave fewer than 5 scenes per domain (:func:`~raypipe.synthetic.writer.default_scene_size`).

Python::

    from raypipe.synthetic import generate, render_tiles
    meta = generate("s3://bucket/synthetic", tiles=2000, size=256, seed=0)
    # only the source-domain tiles (no synthetic.json), e.g. for a throughput benchmark:
    records = render_tiles("s3://bench/synthetic", tiles=512, size=256, seed=0, domains=("source",))

Reading it back: ``prepare("synthetic", root, manifest)`` (:mod:`raypipe.data.datasets.synthetic`).

Modules: :mod:`~raypipe.synthetic.layout` (paths, numbering, random streams),
:mod:`~raypipe.synthetic.scene` (classes, class maps, scenes and splits),
:mod:`~raypipe.synthetic.spectra` (optical spectra, domain gap), :mod:`~raypipe.synthetic.sar`
(backscatter, speckle), :mod:`~raypipe.synthetic.writer` (rendering, parallel writing, ``generate``).

Command line: ``python jobs/make_synthetic.py --out DIR --tiles 2000 --size 256 --seed 0``.
"""

from raypipe.synthetic.layout import (
    DEFAULT_SCENE_SIZE,
    DOMAINS,
    LAYOUT,
    METADATA_FILE,
    MIN_SCENES,
    PIXEL_SIZE_M,
    ROIS,
    SAMPLE_ID_FORMAT,
    SYNTHETIC_VERSION,
    TEST_SCENE_FRACTION,
)
from raypipe.synthetic.sar import S1_BACKSCATTER_DB, SAR_LOOKS, render_sar
from raypipe.synthetic.scene import (
    CLASS_TO_IGBP,
    CLASS_TO_LCCS,
    CLASSES,
    LC_BANDS,
    TileSpec,
    class_map,
    held_out_scenes,
    plan,
    render_lc,
    scene_count,
)
from raypipe.synthetic.spectra import S2_SPECTRA, DomainGap, render_optical, to_uint16
from raypipe.synthetic.writer import (
    CLOUD_PRESETS,
    MIN_SIZE,
    MIN_TILES,
    RenderConfig,
    RenderedTile,
    cloud_salt,
    default_scene_size,
    default_workers,
    generate,
    render_config,
    render_tile,
    render_tiles,
    validate,
    write_tiles,
)

__all__ = [
    "CLASSES", "CLASS_TO_IGBP", "CLASS_TO_LCCS", "CLOUD_PRESETS", "DEFAULT_SCENE_SIZE", "DOMAINS", "DomainGap",
    "LAYOUT", "LC_BANDS", "METADATA_FILE", "MIN_SCENES", "MIN_SIZE", "MIN_TILES", "PIXEL_SIZE_M", "ROIS",
    "RenderConfig", "RenderedTile", "S1_BACKSCATTER_DB", "S2_SPECTRA", "SAMPLE_ID_FORMAT", "SAR_LOOKS",
    "SYNTHETIC_VERSION", "TEST_SCENE_FRACTION", "TileSpec", "class_map", "cloud_salt", "default_scene_size",
    "default_workers", "generate", "held_out_scenes", "plan", "render_config", "render_lc", "render_optical",
    "render_sar", "render_tile", "render_tiles", "scene_count", "to_uint16", "validate", "write_tiles",
]
