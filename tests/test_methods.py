"""KD loss, pseudo-label filtering and the IRM sanity properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raypipe.errors import ConfigError
from raypipe.losses import (
    filter_pseudo_labels,
    filter_scores,
    filter_stats,
    auroc,
    irm_scores,
    irm_weights,
    kd_loss,
    kd_loss_from_probs,
    soft_targets,
    target_distillation_loss,
)
from raypipe.models import MultiModalOutput

C = 10


def logits_from_probs(*rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def peaked(cls: int, p: float, c: int = C) -> list[float]:
    """A distribution with ``p`` on ``cls`` and the rest spread evenly."""
    row = [(1 - p) / (c - 1)] * c
    row[cls] = p
    return row


# ---------------------------------------------------------------- KD


def test_kd_zero_for_identical_positive_otherwise():
    torch.manual_seed(0)
    s = torch.randn(6, C)
    assert kd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(6, C)
    loss = kd_loss(s, t, T=4.0)
    assert loss.item() > 0
    ref = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean") * 16
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    p = soft_targets(t, 4.0)
    assert torch.allclose(p.sum(-1), torch.ones(6))
    assert (soft_targets(t, 8.0).max(-1).values <= p.max(-1).values + 1e-7).all()  # higher T: flatter


def test_kd_weights_and_normalisation():
    torch.manual_seed(0)
    s, t = torch.randn(4, C), torch.randn(4, C)
    per = torch.stack([kd_loss(s[i:i + 1], t[i:i + 1]) for i in range(4)])
    w = torch.tensor([1.0, 0.0, 3.0, 0.0])
    assert kd_loss(s, t, weights=w).item() == pytest.approx(((per[0] + 3 * per[2]) / 4).item(), rel=1e-5)
    assert kd_loss(s, t, weights=10 * w).item() == pytest.approx(kd_loss(s, t, weights=w).item(), rel=1e-5)
    assert kd_loss(s, t, weights=w, normalize="batch").item() == pytest.approx(((per[0] + 3 * per[2]) / 4).item(),
                                                                                 rel=1e-5)
    half = torch.full((4,), 0.5)
    assert kd_loss(s, t, weights=half, normalize="batch").item() == pytest.approx(0.5 * per.mean().item(), rel=1e-5)
    assert kd_loss(s, t, weights=torch.zeros(4)).item() == 0.0
    with pytest.raises(ValueError):
        kd_loss(s, t, weights=-w)
    with pytest.raises(ValueError):
        kd_loss(s, t, weights=torch.ones(3))


def test_kd_gradient_reaches_student_only():
    s = torch.randn(3, C, requires_grad=True)
    t = torch.randn(3, C, requires_grad=True)
    kd_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    mix = 0.3 * soft_targets(t, 4.0) + 0.7 * soft_targets(torch.randn(3, C), 4.0)
    assert kd_loss_from_probs(s, mix).item() > 0
    probs = F.softmax(torch.randn(3, C), -1).requires_grad_(True)
    kd_loss_from_probs(s, probs).backward()
    assert probs.grad is None  # given probabilities are detached too


# ---------------------------------------------------------------- filtering


FILTER_LOGITS = logits_from_probs(
    [0.95, 0.03, 0.02],   # confident: kept by both rules
    [0.45, 0.50, 0.05],   # two-way tie: rejected by both
    [0.20, 0.60, 0.20],   # max 0.6 (< 0.9), margin 0.4 (>= 0.3)
)


def test_filter_rules_on_constructed_logits():
    labels, keep = filter_pseudo_labels(FILTER_LOGITS, "max_softmax", 0.9)
    assert labels.tolist() == [0, 1, 1] and keep.tolist() == [True, False, False]
    _, keep = filter_pseudo_labels(FILTER_LOGITS, "margin", 0.3)
    assert keep.tolist() == [True, False, True]
    _, keep = filter_pseudo_labels(FILTER_LOGITS, "max_softmax", 0.55)
    assert keep.tolist() == [True, False, True]
    _, keep = filter_pseudo_labels(FILTER_LOGITS, "none", 0.99)
    assert keep.all()
    assert torch.allclose(filter_scores(FILTER_LOGITS, "margin"), torch.tensor([0.92, 0.05, 0.40]), atol=1e-5)
    with pytest.raises(ConfigError) as e:
        filter_pseudo_labels(FILTER_LOGITS, "entropy", 0.5)
    assert e.value.field == "filtering.rule"
    with pytest.raises(ConfigError) as e:
        filter_pseudo_labels(FILTER_LOGITS, "margin", 1.5)
    assert e.value.field == "filtering.threshold"


def test_filter_stats_per_class_and_bucket():
    labels = np.array([0, 0, 1, 1, 1, 2])
    keep = np.array([True, False, True, True, False, False])
    frac = np.array([0.0, 0.95, 0.05, 0.5, 1.0, 0.99])
    target = np.array([0, 1, 1, 0, 1, 2])
    s = filter_stats(labels, keep, 4, ["Forest", "Snow/Ice", "Water", "Urban"], frac, target)
    assert s["filter/n"] == 6 and s["filter/kept"] == 3 and s["filter/pass_rate"] == 0.5
    assert s["filter/class/Forest/pass_rate"] == 0.5
    assert s["filter/class/Snow_Ice/pass_rate"] == pytest.approx(2 / 3)
    assert s["filter/class/Water/pass_rate"] == 0.0
    assert s["filter/class/Urban/n"] == 0 and "filter/class/Urban/pass_rate" not in s
    assert s["filter/clear/n"] == 2 and s["filter/clear/pass_rate"] == 1.0
    assert s["filter/partly/pass_rate"] == 1.0
    assert s["filter/cloudy/n"] == 3 and s["filter/cloudy/pass_rate"] == 0.0
    assert s["filter/kept_acc"] == pytest.approx(2 / 3)      # kept: idx 0 ok, 2 ok, 3 wrong
    assert s["filter/rejected_acc"] == pytest.approx(2 / 3)  # rejected: idx 1 wrong, 4 ok, 5 ok
    assert "filter/cloudy/kept_acc" not in s and s["filter/cloudy/rejected_acc"] == pytest.approx(2 / 3)
    assert "filter/score_auroc_clear_vs_cloudy" not in s  # no scores given


def test_filter_score_auroc_says_whether_clouds_score_below_clear_tiles():
    labels, keep = np.zeros(6, int), np.ones(6, bool)
    frac = np.array([0.0, 0.05, 0.5, 0.95, 1.0, 0.99])  # clear, clear, partly, cloudy × 3
    confident_on_clouds = np.array([0.6, 0.7, 0.9, 0.95, 0.99, 0.65])
    s = filter_stats(labels, keep, 2, None, frac, scores=confident_on_clouds)
    # pairs (clear, cloudy) where clear scores higher: 0.7 > 0.65 only -> 1 of 6
    assert s["filter/score_auroc_clear_vs_cloudy"] == pytest.approx(1 / 6)
    s = filter_stats(labels, keep, 2, None, frac, scores=1 - frac)
    assert s["filter/score_auroc_clear_vs_cloudy"] == 1.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5 and auroc([], [1.0]) is None
    with pytest.raises(ValueError, match="3 scores for 6"):
        filter_stats(labels, keep, 2, None, frac, scores=np.zeros(3))


# ---------------------------------------------------------------- IRM

# sample 0 "clear": source and optical teacher agree confidently, SAR teacher unsure;
# sample 1 "cloudy": source and optical teacher near-uniform, SAR teacher confident;
# sample 2 "cloudy, optical disagrees": optical teacher leans to another class, SAR confident.
SRC = logits_from_probs(peaked(3, 0.9), peaked(0, 0.12), peaked(7, 0.2))
OPT = logits_from_probs(peaked(3, 0.85), peaked(2, 0.12), peaked(7, 0.4))
SAR = logits_from_probs(peaked(3, 0.25), peaked(5, 0.9), peaked(5, 0.9))


def test_irm_per_sample_favours_the_reliable_modality():
    w_opt, w_sar = irm_weights(OPT, SRC, SAR, "per_sample")
    assert w_opt.shape == w_sar.shape == (3,)
    assert w_opt[0] > w_sar[0]                       # clear: optical guides more
    assert w_sar[1] > w_opt[1] and w_sar[2] > w_opt[2]  # cloudy: SAR guides more
    assert torch.allclose(w_opt + w_sar, torch.ones(3))
    assert (w_opt > 0).all() and (w_sar > 0).all()
    # the documented formula, by hand, for sample 0 (reference class 3)
    s_o, s_r, ref = irm_scores(OPT, SRC, SAR)
    assert ref.tolist() == [3, 5, 5]
    rho = 0.85 / 0.25
    assert w_opt[0].item() == pytest.approx(0.1 + 0.8 * rho / (1 + rho), rel=1e-5)


def test_irm_floor_no_modality_silenced():
    big = 60.0
    opt = torch.zeros(2, C)
    opt[0, 1] = big
    opt[1, 4] = -big
    src = opt.clone()
    sar = torch.zeros(2, C)
    sar[0, 1] = -big
    sar[1, 4] = big
    for w_min in (0.1, 0.05):
        w_opt, w_sar = irm_weights(opt, src, sar, "per_sample", alpha=4.0, w_min=w_min)
        assert torch.all(w_opt >= w_min - 1e-6) and torch.all(w_sar >= w_min - 1e-6)
        assert w_opt[0] == pytest.approx(1 - w_min, abs=1e-4) and w_sar[1] == pytest.approx(1 - w_min, abs=1e-4)


def test_irm_batch_and_off_modes():
    w_opt, w_sar = irm_weights(OPT, SRC, SAR, "batch")
    assert torch.all(w_opt == w_opt[0]) and torch.all(w_sar == w_sar[0])
    # by hand: references (3, 5, 5); s_O = (0.85, 0.88/9, 0.6/9) (OPT's mass on class 3, 5, 5),
    # s_R = (0.25, 0.9, 0.9); the batch ratio is sum(s_O) / sum(s_R)
    rho = (0.85 + 0.88 / 9 + 0.6 / 9) / (0.25 + 0.9 + 0.9)
    assert w_opt[0].item() == pytest.approx(0.1 + 0.8 * rho / (1 + rho), rel=1e-5)
    w_opt, w_sar = irm_weights(OPT, SRC, SAR, "off")
    assert torch.all(w_opt == 0.5) and torch.all(w_sar == 0.5)
    w_opt, _ = irm_weights(OPT, SRC, SAR, "per_sample", alpha=0.0)
    assert torch.allclose(w_opt, torch.full((3,), 0.5))
    sharp, _ = irm_weights(OPT, SRC, SAR, "per_sample", alpha=3.0)
    soft, _ = irm_weights(OPT, SRC, SAR, "per_sample", alpha=1.0)
    assert sharp[0] > soft[0] and sharp[1] < soft[1]
    with pytest.raises(ConfigError) as e:
        irm_weights(OPT, SRC, SAR, "sample")
    assert e.value.field == "irm.mode"
    with pytest.raises(ConfigError) as e:
        irm_weights(OPT, SRC, SAR, w_min=0.5)
    assert e.value.field == "irm.w_min"


def test_irm_consensus_vs_source_reference():
    # source weakly picks class 1 on a cloudy tile, optical uniform, SAR confident in class 5
    src = logits_from_probs(peaked(1, 0.15))
    opt = torch.zeros(1, C)
    sar = logits_from_probs(peaked(5, 0.95))
    w_cons, _ = irm_weights(opt, src, sar, reference="consensus")
    w_src, _ = irm_weights(opt, src, sar, reference="source")
    assert w_cons.item() < 0.5 < w_src.item()  # anchoring on a confused f_S favours the wrong modality


def test_irm_weights_carry_no_grad():
    opt, src, sar = (x.clone().requires_grad_(True) for x in (OPT, SRC, SAR))
    w_opt, w_sar = irm_weights(opt, src, sar)
    assert not w_opt.requires_grad and not w_sar.requires_grad


def _student(requires_grad=True):
    torch.manual_seed(1)
    heads = [torch.randn(3, C, requires_grad=requires_grad) for _ in range(3)]
    out = MultiModalOutput(fused=heads[0], optical=heads[1], sar=heads[2],
                           optical_features=torch.zeros(3, 1), sar_features=torch.zeros(3, 1))
    return out, heads


def test_target_loss_gradients_reach_student_only():
    out, heads = _student()
    teachers = [x.clone().requires_grad_(True) for x in (SRC, OPT, SAR)]
    loss, parts = target_distillation_loss(out, *teachers)
    loss.backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in heads)
    assert all(t.grad is None for t in teachers)
    assert loss.item() > 0 and not parts["loss"].requires_grad
    expected = parts["kd_src"] + parts["kd_aux"] + 0.5 * (parts["kd_uni_opt"] + parts["kd_uni_sar"])
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["w_opt_mean"].item() + parts["w_sar_mean"].item() == pytest.approx(1.0)


def test_target_loss_aux_term_is_kd_to_irm_mixture():
    """Same student gradient as KD to w_O p_O + w_R p_R: IRM multiplies the teachers' soft targets."""
    T = 4.0
    w_opt, w_sar = irm_weights(OPT, SRC, SAR)
    out, heads = _student()
    loss, _ = target_distillation_loss(out, SRC, OPT, SAR, temperature=T, lambda_src=0.0, lambda_uni=0.0)
    loss.backward()
    fused = heads[0].detach().clone().requires_grad_(True)
    mix = w_opt[:, None] * soft_targets(OPT, T) + w_sar[:, None] * soft_targets(SAR, T)
    kd_loss_from_probs(fused, mix, T).backward()
    assert torch.allclose(heads[0].grad, fused.grad, atol=1e-6)
    assert torch.all(heads[1].grad == 0) and torch.all(heads[2].grad == 0)  # lambda_uni=0: zero, not none


def test_target_loss_modes_and_switches():
    out, _ = _student(requires_grad=False)
    per, p_per = target_distillation_loss(out, SRC, OPT, SAR, irm={"mode": "per_sample"})
    bat, p_bat = target_distillation_loss(out, SRC, OPT, SAR, irm={"mode": "batch"})
    off, p_off = target_distillation_loss(out, SRC, OPT, SAR, irm={"mode": "off"})
    assert len({round(per.item(), 6), round(bat.item(), 6), round(off.item(), 6)}) == 3
    assert p_off["w_opt_min"] == p_off["w_opt_max"] == 0.5
    assert p_bat["w_opt_min"] == p_bat["w_opt_max"]
    _, p_w = target_distillation_loss(out, SRC, OPT, SAR, src_weighting="irm_opt")
    assert p_w["kd_src"] < p_per["kd_src"]   # f_S down-weighted (w_opt < 1 everywhere)
    as_dict = {"fused": out.fused, "optical": out.optical, "sar": out.sar}
    assert target_distillation_loss(as_dict, SRC, OPT, SAR)[0].item() == pytest.approx(per.item())
    with pytest.raises(ConfigError) as e:
        target_distillation_loss(out, SRC, OPT, SAR, irm={"beta": 1.0})
    assert e.value.field == "irm.beta"
    with pytest.raises(ConfigError) as e:
        target_distillation_loss(out, SRC, OPT, SAR, lambda_aux=-1.0)
    assert e.value.field == "loss.lambda_aux"
    assert math.isfinite(target_distillation_loss(out, SRC, OPT, SAR, irm={"temperature": 4.0, "alpha": 2.0})[0].item())


def test_target_loss_sample_mask_is_stage2_filtering():
    out, heads = _student()
    keep = torch.tensor([True, False, True])
    loss, parts = target_distillation_loss(out, SRC, OPT, SAR, sample_mask=keep)
    loss.backward()
    assert torch.all(heads[0].grad[1] == 0) and heads[0].grad[0].abs().sum() > 0
    sub = MultiModalOutput(fused=out.fused[[0, 2]], optical=out.optical[[0, 2]], sar=out.sar[[0, 2]],
                           optical_features=torch.zeros(2, 1), sar_features=torch.zeros(2, 1))
    ref, _ = target_distillation_loss(sub, SRC[[0, 2]], OPT[[0, 2]], SAR[[0, 2]])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # batch mode: the ratio is taken over the kept samples
    w_b, _ = irm_weights(OPT, SRC, SAR, "batch", mask=keep)
    w_sub, _ = irm_weights(OPT[[0, 2]], SRC[[0, 2]], SAR[[0, 2]], "batch")
    assert torch.allclose(w_b, w_sub[:1].expand(3))
    none, _ = target_distillation_loss(out, SRC, OPT, SAR, sample_mask=torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0


# ---------------------------------------------------------------- cloud-aware extensions (not published)

def test_cloud_gate_drops_cloudy_samples_however_confident_f_s_is():
    confident = logits_from_probs(peaked(1, 0.95), peaked(2, 0.95), peaked(3, 0.95))
    frac = torch.tensor([0.0, 0.5, 1.0])
    _, keep = filter_pseudo_labels(confident, "max_softmax", 0.6)
    assert keep.all()  # the published rule keeps all three
    _, keep = filter_pseudo_labels(confident, "max_softmax", 0.6, cloud_fraction=frac, max_cloud_fraction=0.1)
    assert keep.tolist() == [True, False, False]
    _, keep = filter_pseudo_labels(confident, "none", 0.6, cloud_fraction=frac, max_cloud_fraction=0.1)
    assert keep.all()  # "no filtering" means no gate either
    with pytest.raises(ValueError, match="needs each sample's cloud_fraction"):
        filter_pseudo_labels(confident, "max_softmax", 0.6, max_cloud_fraction=0.5)
    with pytest.raises(ConfigError) as e:
        filter_pseudo_labels(confident, "max_softmax", 0.6, cloud_fraction=frac, max_cloud_fraction=1.5)
    assert e.value.field == "filtering.max_cloud_fraction"


def test_irm_cloud_prior_hands_fully_cloudy_tiles_to_sar():
    # both optical teachers confidently agree on class 3 on every sample, SAR says class 5:
    # the published ratio gives optical the large weight everywhere, clouds or not
    opt = logits_from_probs(peaked(3, 0.95), peaked(3, 0.95), peaked(3, 0.95))
    sar = logits_from_probs(peaked(5, 0.6), peaked(5, 0.6), peaked(5, 0.6))
    frac = torch.tensor([0.0, 0.5, 1.0])
    w_plain, _ = irm_weights(opt, opt, sar, "per_sample")
    assert torch.allclose(w_plain, w_plain[0].expand(3)) and w_plain[0] > 0.5
    w_opt, w_sar = irm_weights(opt, opt, sar, "per_sample", cloud_prior=True, cloud_fraction=frac)
    assert w_opt[0].item() == pytest.approx(w_plain[0].item())      # clear: unchanged
    assert w_opt[2].item() == pytest.approx(0.1, abs=1e-4)           # fully cloudy: the floor
    assert w_opt[0] > w_opt[1] > w_opt[2]
    assert torch.allclose(w_opt + w_sar, torch.ones(3))
    # by hand: reference class 3 (0.95 + 0.95 + 0.4/9 beats 0.6 + 2 * 0.05/9), s_O = 0.95, s_R = 0.4/9;
    # the prior scales the optical share rho/(1+rho) by the clear fraction 1 - c = 0.5
    rho = 0.95 / (0.4 / 9)
    assert w_plain[0].item() == pytest.approx(0.1 + 0.8 * rho / (1 + rho), rel=1e-5)
    assert w_opt[1].item() == pytest.approx(0.1 + 0.8 * 0.5 * rho / (1 + rho), rel=1e-5)
    with pytest.raises(ValueError, match="cloud_fraction"):
        irm_weights(opt, opt, sar, "per_sample", cloud_prior=True)
    # through the stage-2 loss, with f_S's term weighted by w_O
    out, _ = _student(requires_grad=False)
    _, parts = target_distillation_loss(out, opt, opt, sar, irm={"cloud_prior": True}, cloud_fraction=frac,
                                        src_weighting="irm_opt")
    assert parts["w_opt_min"].item() == pytest.approx(0.1, abs=1e-4)


def test_irm_cloud_prior_bounds_the_optical_weight_when_confident_teachers_disagree_with_sar():
    """The documented guarantee: w_O - w_min <= (1 - 2 w_min)(1 - c), however confident and in
    agreement the optical teachers are. Here SAR is sure of another class, so its probability of the
    reference class is clamped to eps, as the optical one would be after scaling the score: a prior on
    the score gave w_O = 0.5 at c = 1; on the share it gives the floor."""
    big = 60.0
    opt = torch.zeros(3, C)
    opt[:, 3] = big  # f_S and f_T_Opt: class 3, probability 1
    sar = torch.zeros(3, C)
    sar[:, 5] = big  # f_T_SAR: class 5, probability 1 (so p_R[3] ~ e^-60, clamped to eps)
    frac = torch.tensor([0.95, 0.99, 1.0])
    w_opt, w_sar = irm_weights(opt, opt, sar, "per_sample", w_min=0.1, cloud_prior=True, cloud_fraction=frac)
    # by hand: rho^Opt = 1/(1 + eps) ~ 1 - 1e-6, times (1 - c): 0.05, 0.01, 0
    assert w_opt[0].item() == pytest.approx(0.1 + 0.8 * 0.05, abs=1e-5)  # 0.14 at c = 0.95
    assert w_opt[1].item() == pytest.approx(0.1 + 0.8 * 0.01, abs=1e-5)
    assert w_opt[2].item() == pytest.approx(0.1, abs=1e-6)
    assert torch.allclose(w_opt + w_sar, torch.ones(3))
    w_batch, _ = irm_weights(opt, opt, sar, "batch", w_min=0.1, cloud_prior=True, cloud_fraction=frac)
    assert w_batch[2].item() == pytest.approx(0.1, abs=1e-6) and w_batch[0].item() <= 0.14 + 1e-5


def test_irm_mode_off_with_cloud_prior_is_a_config_error():
    from raypipe.engine import resolve
    from raypipe.methods import get_method

    with pytest.raises(ConfigError) as e:
        resolve(get_method("mtts"), overrides=["stages.target.irm.mode=off", "stages.target.irm.cloud_prior=true"])
    assert e.value.field == "stages.target.irm.cloud_prior"


def test_stage_two_filter_reads_its_temperature():
    """``stages.target.filter.temperature`` reaches the filter (it was accepted and ignored): a
    softmax at T = 4 flattens f_S's scores below the threshold that T = 1 passes."""
    from raypipe.methods.mtts import DistillConfig
    from raypipe.methods.mtts.objective import IRMDistill
    from raypipe.models import build_model
    from raypipe.objectives import FilterConfig

    torch.manual_seed(0)
    n = 4
    src = torch.zeros(n, C)
    src[:, 2] = 4.0  # T = 1: p = e^4 / (e^4 + 9) = 0.858; T = 4: p = e / (e + 9) = 0.232
    batch = {"optical": torch.randn(n, 3, 8, 8), "sar": torch.randn(n, 2, 8, 8), "cloud_fraction": torch.zeros(n),
             "logits/source": src, "logits/aux_optical": src, "logits/aux_sar": torch.randn(n, C)}
    target = build_model({"kind": "multimodal", "num_classes": C, "optical": {"depth": 10, "width": 4,
                          "in_channels": 3, "stem": "small"}, "sar": {"depth": 10, "width": 4, "in_channels": 2,
                          "stem": "small"}})
    teachers = {"source": "optical", "aux_optical": "optical", "aux_sar": "sar"}
    kept = {}
    for T in (1.0, 4.0):
        cfg = DistillConfig(filter=FilterConfig(enabled=True, threshold=0.5, temperature=T))
        loss, parts = IRMDistill(cfg, "both", teachers).loss(target, {}, batch)
        kept[T] = loss.item()
    assert kept[1.0] > 0 and kept[4.0] == 0.0  # nothing passes at T = 4: the masked loss is zero


def test_stage_objectives_read_the_batch_cloud_fraction():
    """The stage objectives pass the pipeline's per-sample cloud fraction to the gate and to IRM."""
    from raypipe.models import build_model
    from raypipe.methods.mtts import DistillConfig, IRMConfig
    from raypipe.methods.mtts.objective import IRMDistill
    from raypipe.objectives import FilterConfig, PseudoLabel, PseudoLabelConfig

    def pseudo(**f):
        return PseudoLabel(PseudoLabelConfig(filter=FilterConfig(threshold=0.6, **f)), "sar", {"source": "optical"})

    teachers = {"source": "optical", "aux_optical": "optical", "aux_sar": "sar"}

    torch.manual_seed(0)
    n, classes = 4, 5
    frac = torch.tensor([0.0, 0.05, 0.6, 1.0])
    confident = torch.zeros(n, classes)
    confident[:, 2] = 20.0  # f_S sure of class 2 everywhere
    batch = {"optical": torch.randn(n, 3, 8, 8), "sar": torch.randn(n, 2, 8, 8), "cloud_fraction": frac,
             "logits/source": confident, "logits/aux_optical": confident,
             "logits/aux_sar": torch.randn(n, classes)}
    student = build_model({"kind": "resnet", "depth": 10, "width": 4, "in_channels": 2, "num_classes": classes,
                           "stem": "small", "norm": "group"})
    _, parts = pseudo(max_cloud_fraction=0.1).loss(student, {}, batch)
    assert parts["kept"].item() == pytest.approx(0.5)  # only the two clear tiles
    _, parts = pseudo().loss(student, {}, batch)
    assert parts["kept"].item() == 1.0  # the published rule keeps every confident tile
    target = build_model({"kind": "multimodal", "num_classes": classes, "optical": {"depth": 10, "width": 4,
                          "in_channels": 3, "stem": "small"}, "sar": {"depth": 10, "width": 4, "in_channels": 2,
                          "stem": "small"}})
    _, parts = IRMDistill(DistillConfig(irm=IRMConfig(cloud_prior=True), src_weighting="irm_opt"), "both",
                          teachers).loss(target, {}, batch)
    assert parts["w_opt_min"].item() == pytest.approx(0.1, abs=1e-4)  # the fully cloudy tile: the floor
    _, parts = IRMDistill(DistillConfig(), "both", teachers).loss(target, {}, batch)
    assert parts["w_opt_min"].item() > 0.5  # without the prior, the confident optical teachers win
