"""SPL: SSIM against a direct implementation, texture complexity and the self-paced order on tiles of
known texture, the remover's loss over kept samples only, the assembled remover -> f_S, and the
method end to end on the engine (remover scored by PSNR / SSIM, nothing trained in the last stage)."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch

from raypipe.engine import resolve
from raypipe.engine.run import run_method
from raypipe.errors import ConfigError
from raypipe.losses.restoration import pace_fraction, self_paced_keep, ssim, texture_complexity
from raypipe.methods import get_method
from raypipe.models import build_model

SPL = get_method("spl")
GEN = {"encoder": {"type": "resnet", "depth": 10, "width": 4}, "decoder_channels": [8, 8, 8, 8, 8], "norm": "group"}
CLS = {"kind": "resnet", "depth": 10, "width": 4, "stem": "small", "norm": "group"}


def _ssim_direct(x: np.ndarray, y: np.ndarray, L: float, size: int = 7, sigma: float = 1.5) -> float:
    """Wang et al.'s SSIM, written out: Gaussian-weighted moments in every valid window, per band."""
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for b in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                px, py = x[b, i:i + size, j:j + size], y[b, i:i + size, j:j + size]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx ** 2, (w * py * py).sum() - my ** 2
                cxy = (w * px * py).sum() - mx * my
                vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_is_wang_et_al_and_one_for_identical_images():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(2, 3, 12, 12)).astype(np.float32)
    x = (y + 0.5 * rng.normal(size=y.shape)).astype(np.float32)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=2.0, window=7, reduce=False)
    expected = [_ssim_direct(x[i], y[i], 2.0) for i in range(2)]
    assert got.tolist() == pytest.approx(expected, rel=1e-4)
    assert float(ssim(torch.from_numpy(y), torch.from_numpy(y))) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=2.0)) < 0.9


def _tiles():
    flat = torch.full((2, 8, 8), 0.3)
    ramp = torch.arange(8.0).repeat(8, 1)[None].repeat(2, 1, 1) * 0.1  # +0.1 per column: mean |dx| 0.1, dy 0
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None]) % 2).float()[None].repeat(2, 1, 1) * 2 - 1
    return torch.stack([checker, flat, ramp])  # hardest first, to check the order is by score


def test_texture_complexity_and_the_self_paced_order_on_known_textures():
    scores = texture_complexity(_tiles())
    assert scores.tolist() == pytest.approx([4.0, 0.0, 0.1])  # checker: |±2| both ways; flat 0; ramp 0.1
    assert pace_fraction(0, 4, 0.5, 0.5) == 0.5 and pace_fraction(1, 4, 0.5, 0.5) == 1.0
    assert [pace_fraction(e, 10, 0.2, 0.5) for e in (0, 2, 4, 5)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert self_paced_keep(scores, 1 / 3).tolist() == [False, True, False]  # the flat tile alone
    assert self_paced_keep(scores, 0.5).tolist() == [False, True, True]  # then the ramp
    assert self_paced_keep(scores, 1.0).all()


def _removal(*sets):
    cfg = resolve(SPL, overrides=list(sets))
    stage = SPL.stage("declouder")
    obj = stage.objective_class()(cfg.stages.declouder, stage.inputs, {})
    obj.check("stages.declouder")
    return obj


def test_the_removers_loss_uses_the_kept_samples_only_and_two_optimisers():
    torch.manual_seed(0)
    obj = _removal("stages.declouder.pace.start=0.5", "stages.declouder.pace.full_at=0.5")
    model = build_model({"kind": "declouder", "in_channels": 2, "generator": GEN})
    clear = _tiles()
    batch = {"optical": clear + 0.8, "optical_clear": clear}
    obj.start_epoch(0, 4)  # half of the batch: ceil(1.5) = 2 easiest, the flat and the ramp tiles
    losses, parts = obj.loss(model, {}, batch)
    assert set(losses) == {"generator", "discriminator"} and float(parts["kept"]) == pytest.approx(2 / 3)
    restored = model(batch["optical"][1:]).restored
    l1 = (restored - clear[1:]).abs().mean()
    assert float(parts["l1"]) == pytest.approx(float(l1), rel=1e-5)
    changed = {**batch, "optical": batch["optical"].clone()}
    changed["optical"][0] += 5.0  # the hardest tile is not learnt from in this epoch
    again, _ = obj.loss(model, {}, changed)
    assert torch.allclose(again["generator"], losses["generator"])
    assert set(obj.configure_optimizers(model, resolve(SPL).stages.declouder.train)) == {"generator", "discriminator"}
    obj.start_epoch(1, 4)
    _, parts = obj.loss(model, {}, batch)
    assert float(parts["kept"]) == 1.0
    with pytest.raises(ConfigError) as err:
        resolve(SPL, overrides=["stages.declouder.pace.start=0"])
    assert err.value.field == "stages.declouder.pace.start"


def test_classify_is_the_remover_then_f_s_assembled_not_trained():
    torch.manual_seed(1)
    remover = build_model({"kind": "declouder", "in_channels": 4, "num_classes": 5, "generator": GEN})
    f_s = build_model({**CLS, "in_channels": 4, "num_classes": 5})
    cfg = resolve(SPL)
    stage = SPL.stage("classify")
    obj = stage.objective_class()(cfg.stages.classify, stage.inputs, {"source": "optical", "declouder": "optical"})
    obj.check("stages.classify")
    spec = {"kind": "restore_classify", "in_channels": 4, "num_classes": 5,
            "restorer": {"kind": "declouder", "num_classes": 5, "generator": GEN}, "classifier": CLS}
    state = obj.assemble(spec, {"declouder": {"state": remover.state_dict()}, "source": {"state": f_s.state_dict()}})
    composite = build_model(spec)
    composite.load_state_dict(state)
    composite.eval(), remover.eval(), f_s.eval()
    x = torch.randn(3, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(composite(x), f_s(remover(x).restored), atol=1e-6)
    wrong = {**spec, "classifier": {**CLS, "width": 8}}
    with pytest.raises(ConfigError) as err:
        obj.assemble(wrong, {"declouder": {"state": remover.state_dict()}, "source": {"state": f_s.state_dict()}})
    assert err.value.field == "stages.classify.model.classifier"


@pytest.fixture(scope="module")
def spl_run(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("spl")
    train = {"epochs": 2, "batch_size": 16}
    extra = {"data": {"benchmark": {"out": str(tmp / "bench"), "tiles": 40, "size": 16, "scene_size": 10}},
             "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}, "ray": {"storage_path": str(tmp / "runs")},
             "stages": {"source": {"model": CLS, "train": train},
                        "declouder": {"model": {"kind": "declouder", "generator": GEN}, "train": train}}}
    return tmp, run_method(SPL, resolve(SPL, extra=extra))


def test_spl_runs_on_the_engine_remover_scored_and_last_stage_assembled(spl_run):
    tmp, result = spl_run
    assert list(result.stages) == ["source", "declouder", "classify"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    rem = client.get_run(result.stages["declouder"].run_id).data
    assert [m.step for m in client.get_metric_history(result.stages["declouder"].run_id, "val/psnr")] == [0, 1]
    sim_test = result.stages["declouder"].evaluations["source_sim_test"]["overall"]
    assert sim_test["n"] > 0 and math.isfinite(sim_test["psnr"]) and -1 <= sim_test["ssim"] <= 1
    assert math.isfinite(sim_test["input_psnr"])  # the no-removal reference beside it
    assert "train/kept" in rem.metrics and rem.tags["raypipe.oracle"] == "none"  # no mask read: not an oracle
    cls = client.get_run(result.stages["classify"].run_id).data
    assert "epoch" not in cls.metrics  # assembled: no epoch ran
    assert cls.tags["raypipe.input.declouder"] == result.stages["declouder"].run_id
    assert result.stages["classify"].evaluations["target_test"]["overall"]["n"] > 0
    assert "SPL: cloud removal, then f_S" in result.table
