"""Clouds: detection on real Sentinel-2 L1C tiles and seeded simulation on cloud-free ones (DESIGN §3)."""

from raypipe.clouds.detect import (
    DEFAULT_DETECTOR,
    DEFAULT_FACTOR,
    RuleBasedDetector,
    S2CloudlessDetector,
    load_s2cloudless,
    make_detector,
    rule_based_mask,
    rule_based_score,
    shadow_mask,
)
from raypipe.clouds.simulate import (
    PRESETS,
    CloudPreset,
    CoverageDistribution,
    SimulatedClouds,
    seed_from_id,
    simulate_clouds,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_FACTOR",
    "PRESETS",
    "CloudPreset",
    "CoverageDistribution",
    "RuleBasedDetector",
    "S2CloudlessDetector",
    "SimulatedClouds",
    "load_s2cloudless",
    "make_detector",
    "rule_based_mask",
    "rule_based_score",
    "seed_from_id",
    "shadow_mask",
    "simulate_clouds",
]
