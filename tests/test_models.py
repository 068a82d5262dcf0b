"""Models: ResNet shapes per depth/stem, overfitting, heterogeneous multimodal net, factory errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raypipe.errors import ConfigError
from raypipe.models import (
    BasicBlock,
    Bottleneck,
    MultiModalNet,
    ResNet,
    build_model,
    check_model_inputs,
    model_spec_in_channels,
)

torch.set_num_threads(1)

TINY = {"width": 4, "stem": "small"}


@pytest.mark.parametrize("depth,expansion", [(10, 1), (18, 1), (34, 1), (50, 4)])
@pytest.mark.parametrize("in_channels", [2, 13])
def test_resnet_shapes_per_depth(depth, expansion, in_channels):
    m = ResNet(depth=depth, in_channels=in_channels, num_classes=7, **TINY).eval()
    x = torch.randn(2, in_channels, 16, 16)
    assert m.feature_dim == 8 * 4 * expansion
    assert m.forward_features(x).shape == (2, m.feature_dim)
    assert m(x).shape == (2, 7)
    blocks = [b for b in m.modules() if isinstance(b, (BasicBlock, Bottleneck))]
    per_depth = {10: 4, 18: 8, 34: 16, 50: 16}
    assert len(blocks) == per_depth[depth]
    assert all(isinstance(b, Bottleneck) == (depth == 50) for b in blocks)


def test_stems_downsample_differently():
    small = ResNet(depth=10, in_channels=4, num_classes=3, width=4, stem="small")
    std = ResNet(depth=10, in_channels=4, num_classes=3, width=4, stem="standard")
    x = torch.randn(1, 4, 32, 32)
    assert small.stem(x).shape[-1] == 32   # 3x3 stride 1, no max-pool
    assert std.stem(x).shape[-1] == 8      # 7x7 stride 2 + max-pool
    assert std(torch.randn(1, 4, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError):
        ResNet(depth=20)
    with pytest.raises(ValueError):
        ResNet(stem="huge")


def test_headless_encoder_and_reset_classifier():
    m = ResNet(depth=10, in_channels=2, num_classes=0, width=4, stem="small")
    x = torch.randn(3, 2, 8, 8)
    assert m.fc is None and m(x).shape == (3, m.feature_dim)
    m.reset_classifier(5)
    assert m(x).shape == (3, 5)


def test_kaiming_and_zero_init_residual():
    m = ResNet(depth=18, in_channels=3, num_classes=2, width=8, stem="small", zero_init_residual=True)
    blocks = [b for b in m.modules() if isinstance(b, BasicBlock)]
    assert all(torch.all(b.last_bn.weight == 0) for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    conv = blocks[-1].conv1  # kaiming fan_out: std = sqrt(2 / (out_ch * k * k))
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.15)
    # a zero-initialised block is relu(shortcut): identity on a non-negative input without projection
    b = blocks[1].eval()
    x = torch.rand(1, b.conv1.in_channels, 4, 4)
    assert torch.allclose(b(x), x)
    m2 = ResNet(depth=18, in_channels=3, num_classes=2, width=8, stem="small")
    assert all(torch.all(b.last_bn.weight == 1) for b in m2.modules() if isinstance(b, BasicBlock))


def test_tiny_resnet_overfits_16_samples():
    torch.manual_seed(0)
    x = torch.randn(16, 4, 8, 8)
    y = torch.arange(16) % 8
    m = ResNet(depth=10, in_channels=4, num_classes=8, width=8, stem="small")
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = F.cross_entropy(m(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (m(x).argmax(1) == y).float().mean().item()  # train-mode BN: the fitted statistics
    assert loss.item() < 0.1 * first
    assert acc == 1.0


def _hetero(**kw):
    opt = ResNet(depth=18, in_channels=10, num_classes=0, width=8, stem="small")
    sar = ResNet(depth=10, in_channels=2, num_classes=0, width=4, stem="small")
    return MultiModalNet(opt, sar, num_classes=5, **kw)


def test_multimodal_heterogeneous_forward_backward():
    torch.manual_seed(0)
    m = _hetero()
    out = m(torch.randn(3, 10, 16, 16), torch.randn(3, 2, 8, 8))  # different tile sizes too
    assert out.fused.shape == out.optical.shape == out.sar.shape == (3, 5)
    assert out.optical_features.shape == (3, 64) and out.sar_features.shape == (3, 32)
    (out.fused.sum() + out.optical.sum() + out.sar.sum()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []
    a, b = m.fused_contributions(out)
    assert torch.allclose(a + b, out.fused, atol=1e-6)
    assert out.logits("sar") is out.sar
    with pytest.raises(KeyError):
        out.logits("lidar")


def test_multimodal_drop_zeroes_one_modality():
    torch.manual_seed(0)
    m = _hetero().eval()
    xo, xs = torch.randn(2, 10, 8, 8), torch.randn(2, 2, 8, 8)
    full = m(xo, xs)
    no_sar = m(xo, xs, drop="sar")
    assert torch.all(no_sar.sar_features == 0)
    assert torch.allclose(no_sar.optical, full.optical)
    expected = m.fused_head(torch.cat([full.optical_features, torch.zeros_like(full.sar_features)], 1))
    assert torch.allclose(no_sar.fused, expected, atol=1e-6)
    assert not torch.allclose(no_sar.fused, full.fused)
    no_opt = m(xo, xs, drop="optical")
    assert torch.all(no_opt.optical_features == 0) and torch.allclose(no_opt.sar, full.sar)
    with pytest.raises(ValueError):
        m(xo, xs, drop="lidar")


def test_multimodal_late_fusion_variational_and_head_stripping():
    torch.manual_seed(0)
    late = _hetero(fusion="late").eval()
    out = late(torch.randn(2, 10, 8, 8), torch.randn(2, 2, 8, 8))
    assert late.fused_head is None
    assert torch.allclose(out.fused, 0.5 * (out.optical + out.sar))
    var = _hetero(variational=True)
    xo, xs = torch.randn(2, 10, 8, 8), torch.randn(2, 2, 8, 8)
    o = var(xo, xs)
    assert set(o.mu) == {"optical", "sar"} and o.logvar["sar"].shape == (2, 32)
    var.eval()
    assert torch.allclose(var(xo, xs).fused, var(xo, xs).fused)  # mu at eval: deterministic
    enc = ResNet(depth=10, in_channels=2, num_classes=9, width=4, stem="small")
    MultiModalNet(enc, ResNet(depth=10, in_channels=2, num_classes=0, width=4), num_classes=3)
    assert enc.fc is None  # its own classifier would be an unused parameter under DDP


def test_multimodal_ddp_needs_no_unused_parameter_search(tmp_path):
    """With the stage-2 loss every parameter is used; a fused-only loss is not (as documented)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from raypipe.losses import target_distillation_loss

    spec = {"kind": "multimodal", "num_classes": 4,
            "optical": {"depth": 10, "width": 4, "in_channels": 4, "stem": "small"},
            "sar": {"depth": 10, "width": 4, "in_channels": 2, "stem": "small"}}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        def steps(model, loss_fn):
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            for _ in range(2):
                out = model(torch.randn(2, 4, 8, 8), torch.randn(2, 2, 8, 8))
                opt.zero_grad()
                loss_fn(out).backward()
                opt.step()

        t = [torch.randn(2, 4) for _ in range(3)]
        steps(DDP(build_model(spec)), lambda o: target_distillation_loss(o, *t)[0])
        with pytest.raises(RuntimeError, match="parameters that were not used"):
            steps(DDP(build_model(spec)), lambda o: o.fused.sum())
    finally:
        dist.destroy_process_group()


SPEC = {"kind": "multimodal", "num_classes": 10, "fusion": "concat",
        "optical": {"depth": 18, "width": 4, "in_channels": 10, "stem": "small"},
        "sar": {"kind": "resnet", "depth": 10, "width": 4, "in_channels": 2, "stem": "small"}}


def test_factory_builds_models():
    r = build_model({"kind": "resnet", "depth": 34, "width": 4, "in_channels": 13, "num_classes": 10,
                     "stem": "small", "zero_init_residual": True, "dropout": 0.1})
    assert isinstance(r, ResNet) and r.depth == 34 and r.num_classes == 10
    m = build_model(SPEC)
    assert isinstance(m, MultiModalNet)
    assert m.optical_encoder.depth == 18 and m.sar_encoder.depth == 10
    assert m.optical_encoder.fc is None and m.sar_encoder.fc is None
    assert model_spec_in_channels(SPEC) == {"optical": 10, "sar": 2}
    assert model_spec_in_channels({"kind": "resnet", "in_channels": 4, "num_classes": 3}) == {"input": 4}
    check_model_inputs(SPEC, {"optical": 10, "sar": 2})


def _with(path: str, value):
    import copy

    spec = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize("path,value,field", [
    ("kind", "vit", "models.target.kind"),
    ("sar.depth", 20, "models.target.sar.depth"),
    ("sar.depth", "18", "models.target.sar.depth"),
    ("optical.width", 0, "models.target.optical.width"),
    ("optical.in_channels", True, "models.target.optical.in_channels"),
    ("optical.in_channels", KeyError, "models.target.optical.in_channels"),
    ("sar.stem", "tiny", "models.target.sar.stem"),
    ("sar.colour", 1, "models.target.sar.colour"),
    ("sar.num_classes", 10, "models.target.sar.num_classes"),
    ("sar.kind", "multimodal", "models.target.sar.kind"),
    ("sar.dropout", 1.5, "models.target.sar.dropout"),
    ("fusion", "attention", "models.target.fusion"),
    ("variational", "yes", "models.target.variational"),
    ("num_classes", KeyError, "models.target.num_classes"),
    ("sar", KeyError, "models.target.sar"),
    ("sar", [1, 2], "models.target.sar"),
    ("extra", 1, "models.target.extra"),
])
def test_factory_config_errors_name_the_field(path, value, field):
    with pytest.raises(ConfigError) as e:
        build_model(_with(path, value), field="models.target")
    assert e.value.field == field
    assert field in str(e.value)


def test_check_model_inputs_names_band_mismatch():
    with pytest.raises(ConfigError) as e:
        check_model_inputs(SPEC, {"optical": 13, "sar": 2}, field="models.target")
    assert e.value.field == "models.target.optical.in_channels" and "13" in e.value.problem
    with pytest.raises(ConfigError) as e:
        check_model_inputs({"kind": "resnet", "in_channels": 4, "num_classes": 3}, {"input": 10}, "models.source")
    assert e.value.field == "models.source.in_channels"
    with pytest.raises(ConfigError) as e:
        build_model({"depth": 18}, field="models.source")
    assert e.value.field == "models.source.kind"
