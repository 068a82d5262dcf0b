"""OGM-GE on f_S's filtered pseudo labels: the coefficient from hand-computed scores, the gradients it
touches (the stronger encoder's convolution weights only), GE's noise, and the early-epoch window."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raypipe.engine import resolve
from raypipe.errors import ConfigError
from raypipe.methods import get_method
from raypipe.models import build_model

TINY = {"depth": 10, "width": 4, "stem": "small", "norm": "group"}


def _objective(*sets):
    m = get_method("ogm_ge")
    cfg = resolve(m, overrides=list(sets))
    obj = m.stage("student").objective_class()(cfg.stages.student, "both", {"source": "optical"})
    obj.check("stages.student")
    return obj


def _model():
    model = build_model({"kind": "multimodal", "num_classes": 3, "optical": {**TINY, "in_channels": 4},
                         "sar": {**TINY, "in_channels": 2}})
    # as after some training: at init the fused head is zero and the features near zero, so both
    # modalities' shares, and scores, are equal
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _batch(n=6):
    # f_S's logits: rows 0, 2, 3, 5 pass max-softmax >= 0.6 (0.96, 0.91, 0.98, 0.87); rows 1, 4 do not
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0],
                            [0.0, 5.0, 0.0], [0.2, 0.0, 0.1], [0.0, 0.0, 2.6]])[:n]
    return {"optical": torch.randn(n, 4, 8, 8), "sar": torch.randn(n, 2, 8, 8), "logits/source": teacher}


def test_coefficient_is_one_minus_tanh_alpha_rho_of_the_hand_computed_scores():
    torch.manual_seed(0)
    obj, model, batch = _objective("stages.student.ogm.alpha=0.3"), _model(), _batch()
    obj.start_epoch(0, 4)
    loss, parts = obj.loss(model, {}, batch)

    out = model(batch["optical"], batch["sar"])
    kept, y = torch.tensor([0, 2, 3, 5]), torch.tensor([0, 2, 1, 2])
    assert torch.allclose(loss, F.cross_entropy(out.fused[kept], y))  # only the fused CE, kept samples
    d = out.optical_features.shape[1]
    w, b = model.fused_head.weight.detach(), model.fused_head.bias.detach()
    share = {"optical": out.optical_features.detach() @ w[:, :d].T + b / 2,
             "sar": out.sar_features.detach() @ w[:, d:].T + b / 2}
    s = {m: sum(math.exp(v[i, c]) / sum(math.exp(x) for x in v[i].tolist())
                for i, c in zip(kept.tolist(), y.tolist())) for m, v in share.items()}
    rho = s["optical"] / s["sar"]
    assert abs(rho - 1) > 1e-3  # a real imbalance, not the tie of a zero head
    k = 1 - math.tanh(0.3 * max(rho, 1 / rho))
    assert float(parts["ogm/ratio"]) == pytest.approx(rho, rel=1e-5)
    assert float(parts["ogm/k"]) == pytest.approx(k, rel=1e-5)
    assert obj._step[0] == ("optical" if rho > 1 else "sar")


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["ogm", "ogm_ge"])
def test_only_the_stronger_encoders_conv_gradients_are_modulated(mode):
    torch.manual_seed(1)
    obj, model, batch = _objective(f"stages.student.ogm.mode={mode}", "stages.student.ogm.alpha=0.8"), _model(), _batch()
    obj.start_epoch(0, 4)
    loss, parts = obj.loss(model, {}, batch)
    loss.backward()
    stronger, k = obj._step
    assert stronger in ("optical", "sar") and 0 < k < 1 and float(parts["ogm/k"]) == pytest.approx(k)
    enc = {"optical": model.optical_encoder, "sar": model.sar_encoder}
    weaker = "sar" if stronger == "optical" else "optical"
    before = {m: _grads(e) for m, e in enc.items()}
    head = _grads(model.fused_head)
    obj.after_backward(model, "main")
    after = {m: _grads(e) for m, e in enc.items()}
    for n, g in after[weaker].items():
        assert torch.equal(g, before[weaker][n]), f"weaker encoder's {n} touched"
    for n, g in _grads(model.fused_head).items():
        assert torch.equal(g, head[n])
    conv = [n for n, g in before[stronger].items() if g.dim() == 4]
    assert conv
    for n, g in after[stronger].items():
        g0 = before[stronger][n]
        if g0.dim() != 4:
            assert torch.equal(g, g0), f"non-conv {n} touched"
        elif mode == "ogm":
            assert torch.allclose(g, k * g0)
    if mode == "ogm_ge":  # g k + N(0, std(g)): the residual's spread is the unmodulated gradient's
        big = max(conv, key=lambda n: before[stronger][n].numel() * before[stronger][n].std().item())
        g0, g = before[stronger][big], after[stronger][big]
        residual = g - k * g0
        assert g0.numel() > 500 and g0.std().item() > 1e-7  # well above the 1e-8 the reference adds
        assert residual.std().item() == pytest.approx(g0.std().item() + 1e-8, rel=0.2)


def test_modulation_only_in_the_first_fraction_of_the_epochs():
    torch.manual_seed(2)
    obj, model, batch = _objective("stages.student.ogm.mode=ogm", "stages.student.ogm.modulation_epochs=0.5"), _model(), _batch()
    active = []
    for epoch in range(5):  # ceil(0.5 * 5) = 3 epochs modulated
        obj.start_epoch(epoch, 5)
        model.zero_grad()
        loss, parts = obj.loss(model, {}, batch)
        loss.backward()
        before = _grads(model)
        obj.after_backward(model, "main")
        changed = any(not torch.equal(g, before[n]) for n, g in _grads(model).items())
        active.append(changed)
        assert (float(parts["ogm/k"]) < 1) == changed
    assert active == [True, True, True, False, False]


def test_ogm_ge_config_errors_name_the_field():
    with pytest.raises(ConfigError) as err:
        resolve(get_method("ogm_ge"), overrides=["stages.student.ogm.modulation_epochs=1.5"])
    assert err.value.field == "stages.student.ogm.modulation_epochs"
    m = get_method("ogm_ge")
    cfg = resolve(m, overrides=["stages.student.model.kind=resnet"])
    with pytest.raises(ConfigError) as err:
        m.stage("student").objective_class()(cfg.stages.student, "optical", {"source": "optical"}).check("stages.student")
    assert err.value.field == "stages.student.model"
