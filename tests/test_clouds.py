"""Cloud detection (rule, s2cloudless at reduced resolution) and seeded cloud simulation."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from raypipe.clouds import (
    DEFAULT_DETECTOR,
    PRESETS,
    CloudPreset,
    CoverageDistribution,
    S2CloudlessDetector,
    load_s2cloudless,
    make_detector,
    rule_based_mask,
    rule_based_score,
    seed_from_id,
    shadow_mask,
    simulate_clouds,
)
from raypipe.bands import S2_BANDS, S2CLOUDLESS_BANDS, band_indexes
from raypipe.errors import ConfigError

CLOUDY_TILE = "ROIs1970_fall_139_p839"  # thick clouds over much of the tile
CLEAR_TILE = "ROIs2017_winter_112_p797"  # almost clear: a hard negative

# Top-of-atmosphere reflectance (0-1) of typical L1C surfaces, per band name.
SPECTRA = {
    "cloud": dict(B1=0.55, B2=0.55, B3=0.54, B4=0.54, B5=0.55, B6=0.56, B7=0.57, B8=0.57, B8A=0.57,
                  B9=0.18, B10=0.05, B11=0.35, B12=0.22),
    "vegetation": dict(B1=0.12, B2=0.09, B3=0.08, B4=0.05, B5=0.10, B6=0.25, B7=0.30, B8=0.33, B8A=0.35,
                       B9=0.10, B10=0.002, B11=0.18, B12=0.09),
    "water": dict(B1=0.11, B2=0.08, B3=0.06, B4=0.04, B5=0.03, B6=0.02, B7=0.02, B8=0.02, B8A=0.02,
                  B9=0.01, B10=0.001, B11=0.01, B12=0.005),
    "snow": dict(B1=0.80, B2=0.80, B3=0.78, B4=0.76, B5=0.74, B6=0.72, B7=0.70, B8=0.68, B8A=0.66,
                 B9=0.30, B10=0.01, B11=0.05, B12=0.04),
}


def uniform_tile(surface: str, size: int = 24) -> np.ndarray:
    """A (13, size, size) uint16 L1C tile of one surface (reflectance x 10000)."""
    values = np.array([SPECTRA[surface][b] for b in S2_BANDS]) * 10000
    return np.broadcast_to(values[:, None, None], (13, size, size)).astype(np.uint16).copy()


def read_tile(real_data, folder: str, name: str) -> np.ndarray:
    with rasterio.open(real_data / "SEN12MS-CR/GLF-CR/data" / folder / f"{name}.tif") as src:
        return src.read()


@pytest.fixture(scope="module")
def cloudy_tiles(real_data) -> dict[str, np.ndarray]:
    return {name: read_tile(real_data, "s2_cloudy", name) for name in (CLOUDY_TILE, CLEAR_TILE)}


# ---------------------------------------------------------------- rule-based (DSen2-CR)


@pytest.mark.parametrize("surface, cloudy", [("cloud", True), ("vegetation", False), ("water", False),
                                             ("snow", False)])
def test_rule_score_separates_cloud_from_bright_and_dark_surfaces(surface, cloudy):
    score = rule_based_score(uniform_tile(surface))
    assert score.dtype == np.float32 and score.shape == (24, 24)
    if cloudy:
        assert score.min() > 0.9
    else:  # snow is as bright as cloud: only the NDSI term can reject it
        assert score.max() < 0.1
    assert rule_based_mask(uniform_tile(surface)).all() == cloudy


def test_rule_score_closes_small_dark_holes_in_clouds():
    tile = uniform_tile("cloud", 32)
    tile[:, 16, 16] = uniform_tile("vegetation", 1)[:, 0, 0]
    assert rule_based_score(tile)[16, 16] > 0.9


def test_rule_mask_follows_the_cloud_edge():
    tile = uniform_tile("vegetation", 48)
    tile[:, :, :24] = uniform_tile("cloud", 48)[:, :, :24]
    mask = rule_based_mask(tile)
    assert mask[:, :18].all() and not mask[:, 30:].any()


def test_shadow_mask_finds_dark_patch_and_leaves_clouds_out():
    tile = uniform_tile("vegetation", 64)
    tile[:, 20:40, 20:40] //= 4  # shadowed ground: dark in blue, NIR and SWIR
    shadow = shadow_mask(tile)
    assert shadow[24:36, 24:36].all() and not shadow[:, 45:].any()
    clouds = np.zeros((64, 64), bool)
    clouds[20:40, 20:30] = True
    assert not shadow_mask(tile, clouds)[clouds].any()


# ---------------------------------------------------------------- s2cloudless


def test_default_detector_on_real_tiles(cloudy_tiles):
    detect = make_detector(DEFAULT_DETECTOR)
    prob, mask = detect(cloudy_tiles[CLOUDY_TILE])
    assert prob.dtype == np.float32 and mask.dtype == bool and prob.shape == mask.shape == (256, 256)
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert mask.mean() > 0.3
    assert detect(cloudy_tiles[CLEAR_TILE])[1].mean() < 0.1


def test_default_detector_agrees_with_full_resolution(cloudy_tiles):
    """IoU over the union of both real tiles' pixels (the clear tile's masks are both empty)."""
    fast, full = make_detector(DEFAULT_DETECTOR), S2CloudlessDetector(factor=1)
    fast_masks = np.stack([fast(t)[1] for t in cloudy_tiles.values()])
    full_masks = np.stack([full(t)[1] for t in cloudy_tiles.values()])
    iou = (fast_masks & full_masks).sum() / (fast_masks | full_masks).sum()
    assert iou >= 0.85


def test_factor_one_is_plain_s2cloudless(cloudy_tiles):
    from s2cloudless import S2PixelCloudDetector

    crop = cloudy_tiles[CLOUDY_TILE][:, 96:160, 40:104]
    bands = crop[band_indexes(S2_BANDS, S2CLOUDLESS_BANDS)].transpose(1, 2, 0)[None] / 10000.0
    reference = S2PixelCloudDetector(average_over=4, dilation_size=2).get_cloud_masks(bands.astype(np.float32))[0]
    assert 0.2 < reference.mean() < 1.0  # the crop holds a cloud edge
    np.testing.assert_array_equal(S2CloudlessDetector(factor=1)(crop)[1], reference.astype(bool))


@pytest.mark.parametrize("shape", [(37, 53), (5, 3), (64, 17)])
@pytest.mark.parametrize("factor", [8, 5])
def test_s2cloudless_output_is_full_resolution_for_any_size(shape, factor):
    tile = np.random.default_rng(0).integers(0, 6000, size=(13, *shape)).astype(np.uint16)
    prob, mask = S2CloudlessDetector(factor=factor)(tile)
    assert prob.shape == mask.shape == shape
    assert prob.dtype == np.float32 and mask.dtype == bool


def test_s2cloudless_sees_a_cloud_in_a_non_divisible_tile():
    tile = uniform_tile("vegetation", 50)
    tile[:, 10:40, 10:40] = uniform_tile("cloud", 30)
    prob, mask = S2CloudlessDetector(factor=8)(tile)
    assert mask[18:32, 18:32].all() and not mask[:, 48:].any()


def test_detector_pickles_without_the_model():
    load_s2cloudless()
    detector = S2CloudlessDetector(factor=4, threshold=0.5)
    blob = pickle.dumps(detector)
    assert len(blob) < 1000
    copy = pickle.loads(blob)
    assert (copy.factor, copy.threshold) == (4, 0.5)
    tile = uniform_tile("cloud", 16)
    np.testing.assert_array_equal(copy(tile)[0], detector(tile)[0])
    assert load_s2cloudless() is load_s2cloudless()  # loaded once per process


def test_make_detector_names_and_errors():
    score, mask = make_detector("rule", threshold=0.5)(uniform_tile("cloud"))
    assert mask.all() and score.dtype == np.float32
    assert make_detector("s2cloudless", factor=4).factor == 4
    with pytest.raises(ConfigError) as err:
        make_detector("fmask")
    assert err.value.field == "clouds.detector"
    with pytest.raises(ConfigError):
        make_detector("s2cloudless", bogus=1)
    with pytest.raises(ConfigError):
        S2CloudlessDetector(factor=0)


# ---------------------------------------------------------------- simulation

IMAGE = np.random.default_rng(7).uniform(0.02, 0.4, size=(4, 64, 64)).astype(np.float32)


def digest(sim) -> str:
    h = hashlib.sha256(sim.image.tobytes())
    h.update(sim.mask.tobytes())
    if sim.shadow_mask is not None:
        h.update(sim.shadow_mask.tobytes())
    return h.hexdigest()


DIGEST_SCRIPT = """
import hashlib, json, sys
import numpy as np
from raypipe.clouds import simulate_clouds, seed_from_id
image = np.random.default_rng(7).uniform(0.02, 0.4, size=(4, 64, 64)).astype(np.float32)
out = {}
for preset, sid, coverage in json.loads(sys.argv[1]):
    sim = simulate_clouds(image, sid, preset, salt="s", coverage=coverage)
    h = hashlib.sha256(sim.image.tobytes()); h.update(sim.mask.tobytes())
    if sim.shadow_mask is not None:
        h.update(sim.shadow_mask.tobytes())
    out[f"{preset}/{sid}/{coverage}"] = [h.hexdigest(), seed_from_id(sid, "s")]
print(json.dumps(out))
"""


def test_simulation_is_identical_in_another_process():
    cases = [[preset, f"tile_{i}", coverage] for i, preset in enumerate(PRESETS) for coverage in (None, 0.4)]
    proc = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT, json.dumps(cases)], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    theirs = json.loads(proc.stdout)
    for preset, sid, coverage in cases:
        sim = simulate_clouds(IMAGE, sid, preset, salt="s", coverage=coverage)
        assert theirs[f"{preset}/{sid}/{coverage}"] == [digest(sim), seed_from_id(sid, "s")]


def test_seed_depends_on_id_and_salt():
    seeds = {seed_from_id("a"), seed_from_id("b"), seed_from_id("a", "x"), seed_from_id("ax"), seed_from_id("xa")}
    assert len(seeds) == 5


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_different_ids_and_salts_give_different_clouds(preset):
    a = simulate_clouds(IMAGE, "tile_a", preset, coverage=0.5)
    b = simulate_clouds(IMAGE, "tile_b", preset, coverage=0.5)
    c = simulate_clouds(IMAGE, "tile_a", preset, salt="other", coverage=0.5)
    assert (a.mask != b.mask).mean() > 0.1 and (a.mask != c.mask).mean() > 0.1


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_coverage_target_is_honoured(preset):
    for i, coverage in enumerate((0.03, 0.15, 0.5, 0.85, 0.97, 1.0)):
        sim = simulate_clouds(IMAGE, f"cov_{i}", preset, coverage=coverage)
        assert abs(sim.fraction - coverage) <= 1.5 / sim.mask.size
        assert sim.fraction == sim.mask.mean()
    assert simulate_clouds(IMAGE, "full", preset, coverage=1.0).mask.all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_zero_coverage_leaves_the_image_unchanged(preset):
    sim = simulate_clouds(IMAGE, "clear", preset, coverage=0.0)
    np.testing.assert_array_equal(sim.image, IMAGE)
    assert sim.fraction == 0.0 and not sim.mask.any()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_clouds_brighten_masked_pixels_only(preset):
    sim = simulate_clouds(IMAGE, "tile_m", preset, coverage=0.5)
    assert sim.image.dtype == np.float32 and sim.image.shape == IMAGE.shape
    change = sim.image - IMAGE
    cloud = sim.mask[None].repeat(IMAGE.shape[0], axis=0)
    assert change[cloud].mean() > 0.05  # clouds whiten
    clear = ~sim.mask
    if sim.shadow_mask is not None:
        clear &= ~sim.shadow_mask
    # outside the mask (and shadows) the opacity is below 5 %, so reflectance moves by less than that
    assert np.abs(change[:, clear]).max() < 0.05
    assert sim.image.max() <= 1.0


def test_preset_without_coverage_uses_its_clear_level():
    fractions = [simulate_clouds(IMAGE, f"free_{i}", "thick").fraction for i in range(8)]
    assert 0.0 < min(fractions) and max(fractions) < 1.0 and len(set(fractions)) > 1
    assert simulate_clouds(IMAGE, "fog", "fog").fraction > 0.9  # fog covers the whole tile


def test_shadows_darken_the_ground():
    sim = simulate_clouds(IMAGE, "tile_s", "shadow", coverage=0.4)
    assert sim.shadow_mask is not None and sim.shadow_mask.mean() > 0.01
    assert not (sim.shadow_mask & sim.mask).any()
    ratio = sim.image[:, sim.shadow_mask] / IMAGE[:, sim.shadow_mask]
    assert ratio.mean() < 0.9 and np.median(ratio) < 1.0
    assert simulate_clouds(IMAGE, "tile_s", "thick", coverage=0.4).shadow_mask is None


def test_custom_preset_and_bad_inputs():
    faint = CloudPreset(max_opacity=0.3, octaves=2)
    sim = simulate_clouds(IMAGE, "tile_c", faint, coverage=0.5)
    assert np.abs(sim.image - IMAGE).max() < 0.31
    with pytest.raises(ConfigError):
        simulate_clouds(IMAGE, "x", "hurricane")
    with pytest.raises(ConfigError):
        CloudPreset(max_opacity=0.01)
    with pytest.raises(ValueError):
        simulate_clouds(IMAGE, "x", coverage=1.5)


def test_coverage_distribution_buckets():
    dist = CoverageDistribution()
    draws = np.array([dist.draw(f"id_{i}") for i in range(600)])
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    shares = [(draws < 0.1).mean(), ((draws >= 0.1) & (draws <= 0.9)).mean(), (draws > 0.9).mean()]
    assert all(0.25 < s < 0.42 for s in shares)
    assert dist.draw("id_1") == CoverageDistribution().draw("id_1") != dist.draw("id_1", salt="b")
    only_clear = CoverageDistribution(clear=1.0, partly=0.0, full=0.0)
    assert all(only_clear.draw(f"id_{i}") < 0.1 for i in range(50))
    with pytest.raises(ConfigError):
        CoverageDistribution(clear=-1.0)
