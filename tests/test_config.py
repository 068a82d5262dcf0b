import pytest

from raypipe.config import apply_overrides, flatten, from_dict, to_dict
from raypipe.data.pipeline import DataConfig
from raypipe.errors import ConfigError


def test_unknown_key_names_the_dotted_field():
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"clouds": {"detecter": "rule"}}, "data")
    assert e.value.field == "data.clouds.detecter"


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"on_bad_tile": "ignore"}, "data")
    assert e.value.field == "data.on_bad_tile"
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"rows_per_block": "many"}, "data")
    assert e.value.field == "data.rows_per_block"
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"clouds": {"preset": "cumulonimbus"}}, "data")
    assert e.value.field == "data.clouds.preset"


def test_overrides_parse_yaml_scalars_and_roundtrip():
    data = apply_overrides({"data": {"read_threads": 4}}, ["data.read_threads=8", "data.clouds.mode=simulate",
                                                          "data.optical_bands=[B2, B3]"])
    cfg = from_dict(DataConfig, data["data"], "data")
    assert cfg.read_threads == 8 and cfg.clouds.mode == "simulate" and cfg.optical_bands == ["B2", "B3"]
    flat = flatten(to_dict(cfg))
    assert flat["clouds.mode"] == "simulate" and flat["read_threads"] == 8
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no-equals-sign"])


def resolve(**kw):
    from raypipe.engine import resolve as resolve_method
    from raypipe.methods import get_method

    return resolve_method(get_method("mtts"), **kw)


def test_off_and_on_stay_words():
    cfg = resolve(overrides=["stages.target.irm.mode=off", "stages.target.irm.cloud_prior=false",
                             "stages.aux_sar.filter.enabled=false"])
    assert cfg.stages.target.irm.mode == "off" and cfg.stages.aux_sar.filter.enabled is False
    # the same in a YAML file, where YAML 1.1 reads `off` as false
    cfg = resolve(extra={"stages": {"target": {"irm": {"mode": False, "cloud_prior": False}}}})
    assert cfg.stages.target.irm.mode == "off"


def test_mtts_knobs_are_validated_naming_the_field():
    for override, field in (("stages.aux_sar.filter.max_cloud_fraction=1.5", "stages.aux_sar.filter.max_cloud_fraction"),
                            ("stages.source.train.shuffle_buffer=-1", "stages.source.train.shuffle_buffer"),
                            ("stages.target.src_weighting=all", "stages.target.src_weighting"),
                            ("stages.target.irm.cloud_prior=maybe", "stages.target.irm.cloud_prior")):
        with pytest.raises(ConfigError) as e:
            resolve(overrides=[override])
        assert e.value.field == field, override
    cfg = resolve(overrides=["stages.aux_sar.filter.max_cloud_fraction=0.1", "stages.target.irm.cloud_prior=true",
                             "stages.target.src_weighting=irm_opt", "stages.target.train.deterministic=true"])
    assert cfg.stages.aux_sar.filter.max_cloud_fraction == 0.1 and cfg.stages.target.irm.cloud_prior is True
    assert cfg.stages.target.src_weighting == "irm_opt" and cfg.stages.target.train.deterministic is True


def test_an_empty_set_value_is_the_empty_string():
    """README's ``--set data.source_domain=`` (a manifest holding one domain) means "", not null."""
    cfg = resolve(overrides=["data.source_domain=", "data.target_domain="])
    assert cfg.data.source_domain == "" and cfg.data.target_domain == ""


def test_the_default_is_cloud_aware_and_the_published_preset_is_the_paper():
    from pathlib import Path

    d = resolve()
    assert d.stages.aux_optical.filter.max_cloud_fraction == 0.1 and d.stages.aux_sar.filter.max_cloud_fraction == 0.1
    assert d.stages.target.irm.cloud_prior is True and d.stages.target.src_weighting == "irm_opt"
    published = resolve(config_file=str(Path(__file__).resolve().parents[1] / "configs" / "mtts_published.yaml"))
    for stage in ("aux_optical", "aux_sar"):
        f = getattr(published.stages, stage).filter
        assert (f.enabled, f.rule, f.threshold, f.max_cloud_fraction) == (True, "max_softmax", 0.6, 1.0)
    irm = published.stages.target.irm
    assert (irm.mode, irm.alpha, irm.w_min, irm.cloud_prior) == ("per_sample", 1.0, 0.1, False)
    assert published.stages.target.src_weighting == "none"
