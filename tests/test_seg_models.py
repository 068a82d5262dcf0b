"""Segmentation models: MiT encoder, U-Net decoder, CloudSeg fusion / spatial gate / three streams,
SegNet and early fusion, pretrained weights (band adaptation, errors), factory specs and errors."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from raypipe.errors import ConfigError
from raypipe.models import (
    MIT_VARIANTS,
    MODELS,
    TWO_INPUT_KINDS,
    CloudSegNet,
    EarlyFusionSegNet,
    FusionBlock,
    MiT,
    MultiScaleContext,
    ResNetEncoder,
    SegNet,
    SegOutput,
    SpatialGate,
    UNetDecoder,
    build_model,
    check_model_inputs,
    load_pretrained,
    model_spec_in_channels,
    register_model,
)
from raypipe.models.mit import MiTBlock

torch.set_num_threads(1)

TINY = {"type": "mit", "variant": "tiny"}
RESNET = {"type": "resnet", "depth": 10, "width": 8}


def _ceil(n: int, s: int) -> int:
    return -(-n // s)


# --- MiT ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (60, 60), (100, 100), (30, 47)])
def test_mit_feature_strides_any_size(size):
    m = MiT(4, "tiny").eval()
    h, w = size
    feats = m(torch.randn(2, 4, h, w))
    assert len(feats) == 4
    for f, c, s in zip(feats, m.widths, (4, 8, 16, 32)):
        assert f.shape == (2, c, _ceil(h, s), _ceil(w, s))


def test_mit_variant_tables_and_block_counts():
    assert MIT_VARIANTS["b0"].widths == (32, 64, 160, 256)
    for v in ("b1", "b2", "b3", "b4", "b5"):
        assert MIT_VARIANTS[v].widths == (64, 128, 320, 512)
    depths = {"b0": (2, 2, 2, 2), "b1": (2, 2, 2, 2), "b2": (3, 4, 6, 3), "b3": (3, 4, 18, 3),
              "b4": (3, 8, 27, 3), "b5": (3, 6, 40, 3), "tiny": (1, 1, 1, 1)}
    for v, d in depths.items():
        assert MIT_VARIANTS[v].depths == d
        assert MIT_VARIANTS[v].sr_ratios == (8, 4, 2, 1)
        assert MIT_VARIANTS[v].heads == ((1, 1, 2, 4) if v == "tiny" else (1, 2, 5, 8))
        assert MIT_VARIANTS[v].mlp_ratio == (2 if v == "tiny" else 4)
    for v in ("b0", "b4"):  # structure only: b4 is not run
        m = MiT(4, v)
        assert m.widths == MIT_VARIANTS[v].widths
        assert [len(getattr(m, f"block{i}")) for i in range(1, 5)] == list(depths[v])
        assert sum(isinstance(b, MiTBlock) for b in m.modules()) == sum(depths[v])
        blocks = [b for b in m.modules() if isinstance(b, MiTBlock)]
        rates = [b.drop_path.p for b in blocks]
        assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
        assert blocks[0].mlp.fc1.out_features == 4 * m.widths[0]
        assert m.patch_embed1.proj.kernel_size == (7, 7) and m.patch_embed1.proj.stride == (4, 4)
        assert m.patch_embed2.proj.kernel_size == (3, 3) and m.patch_embed2.proj.stride == (2, 2)
        assert m.block1[0].attn.sr.stride == (8, 8) and not hasattr(m.block4[0].attn, "sr")
    b4 = sum(p.numel() for p in MiT(3, "b4").parameters())
    assert 60e6 < b4 < 62e6  # SegFormer's MiT-B4 encoder: ~61 M
    assert MiT(3, "tiny").drop_path == 0.0 and MiT(3, "b0").drop_path == 0.1
    with pytest.raises(ValueError):
        MiT(3, "b9")


def test_mit_cross_stream_holds_stages_2_to_4():
    full = MiT(4, "tiny").eval()
    part = MiT(0, "tiny", first_stage=2).eval()
    assert not hasattr(part, "patch_embed1") and part.stage_ids == (2, 3, 4)
    x = full.forward_stage(1, torch.randn(1, 4, 40, 40))
    assert [f.shape[1] for f in part(x)] == list(full.widths[1:])


# --- fusion block and spatial gate --------------------------------------------------------------

@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("student", [False, True])
@pytest.mark.parametrize("hw", [(7, 5), (1, 1), (3, 2)])
def test_fusion_block_shapes_on_odd_sizes(first, student, hw):
    c = 8
    blk = FusionBlock(c, first=first, spatial_gate=student).train()
    opt, sar = torch.randn(2, c, *hw), torch.randn(2, c, *hw)
    cross = None if first else torch.randn(2, c, *hw)
    o, s, x = blk(opt, sar, cross)
    assert o.shape == s.shape == x.shape == (2, c, *hw)
    assert ("cross" in blk.context) == (not first)
    assert blk.se.parts == (2 if first else 3)


def test_multi_scale_context_by_hand():
    ctx = MultiScaleContext(1)
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    picks = {}
    for name, w in (("x", [1.0, 0.0, 0.0]), ("p2", [0.0, 1.0, 0.0]), ("p4", [0.0, 0.0, 1.0])):
        with torch.no_grad():
            ctx.conv.weight.copy_(torch.tensor(w).reshape(1, 3, 1, 1))
            ctx.conv.bias.zero_()
        picks[name] = ctx(x)[0, 0]
    assert torch.equal(picks["x"], x[0, 0])
    # 2x2 max-pool rounds down (the public code): maxima [[6, 8], [16, 18]]; nearest 2 -> 5 takes rows 0,0,0,1,1
    r = [0, 0, 0, 1, 1]
    m2 = torch.tensor([[6.0, 8.0], [16.0, 18.0]])
    assert torch.equal(picks["p2"], m2[r][:, r])
    assert torch.equal(picks["p4"], torch.full((5, 5), 18.0))  # max of the top-left 4x4
    # a map smaller than the window: the pool rounds up (global max), and ReLU applies
    with torch.no_grad():
        ctx.conv.weight.copy_(torch.tensor([0.0, 0.0, -1.0]).reshape(1, 3, 1, 1))
    assert torch.equal(ctx(torch.ones(1, 1, 3, 2)), torch.zeros(1, 1, 3, 2))
    with torch.no_grad():
        ctx.conv.weight.copy_(torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1))
    y = torch.rand(1, 1, 3, 2)
    assert torch.equal(ctx(y), torch.full((1, 1, 3, 2), y.max().item()))


def test_fusion_block_update_subset_returns_other_streams_unchanged():
    blk = FusionBlock(4, spatial_gate=True, update=("optical",))
    opt, sar, cross = (torch.randn(1, 4, 5, 5) for _ in range(3))
    o, s, _ = blk(opt, sar, cross)
    assert s is sar and not torch.equal(o, opt)
    assert set(blk.gate) == {"optical"}


def test_spatial_gate_matches_hand_computation():
    torch.manual_seed(0)
    gate = SpatialGate("batch").eval()  # BN at its initial running stats: (x - 0) / sqrt(1 + eps)
    w = torch.randn(1, 2, 7, 7) * 0.3
    with torch.no_grad():
        gate.conv.weight.copy_(w)
    d = torch.randn(1, 3, 4, 5)
    got = gate(d)
    # by hand: channel max and mean, zero padding 3, 7x7 correlation, BN, sigmoid
    pooled = torch.stack([d[0].max(dim=0).values, d[0].mean(dim=0)])  # (2, 4, 5)
    padded = torch.zeros(2, 4 + 6, 5 + 6)
    padded[:, 3:7, 3:8] = pooled
    want = torch.empty(4, 5)
    for i in range(4):
        for j in range(5):
            want[i, j] = (padded[:, i:i + 7, j:j + 7] * w[0]).sum()
    want = torch.sigmoid(want / (1 + gate.norm.eps) ** 0.5)
    assert got.shape == (1, 1, 4, 5)
    assert torch.allclose(got[0, 0], want, atol=1e-5)
    assert ((got > 0) & (got < 1)).all()


def test_spatial_gate_scales_the_optical_context_in_the_student_only():
    torch.manual_seed(0)
    blk = FusionBlock(4, first=False, spatial_gate=True).eval()
    opt, sar, cross = (torch.randn(2, 4, 6, 5) for _ in range(3))
    seen = {}
    blk.se.register_forward_hook(lambda mod, args, out: seen.update(args=args))
    blk(opt, sar, cross)
    m_opt, m_sar = blk.context["optical"](opt), blk.context["sar"](sar)
    a = blk.spatial_gate(m_opt - m_sar)
    assert a.shape == (2, 1, 6, 5) and ((a > 0) & (a < 1)).all()
    assert torch.allclose(seen["args"][0], a * m_opt)
    assert torch.allclose(seen["args"][1], m_sar)
    teacher, student = CloudSegNet(4, 2, 3, TINY), CloudSegNet(4, 2, 3, TINY, student=True)
    assert all(f.spatial_gate is None for f in teacher.fusions)
    assert all(isinstance(f.spatial_gate, SpatialGate) for f in student.fusions)


# --- networks ------------------------------------------------------------------------------------

def test_cloudseg_teacher_and_student_outputs_with_sar_on_a_coarser_grid():
    torch.manual_seed(0)
    opt, sar = torch.randn(2, 4, 60, 60), torch.randn(2, 2, 18, 18)
    teacher = CloudSegNet(4, 2, 6, TINY).eval()
    student = CloudSegNet(4, 2, 6, TINY, student=True).eval()
    t, s = teacher(opt, sar), student(opt, sar)
    assert isinstance(t, SegOutput) and isinstance(s, SegOutput)
    dec = teacher.decoder.out_channels
    assert t.logits.shape == s.logits.shape == (2, 6, 60, 60)
    assert t.hint.shape == s.hint.shape == (2, dec, 60, 60)
    assert t.restored is None and s.restored.shape == (2, 4, 60, 60)
    assert teacher.optical_decoder is None and teacher.restore_head is None
    # the hint is exactly what the head sees
    assert torch.allclose(teacher.head(t.hint), t.logits)
    # odd optical sizes, SAR at the optical grid too
    for size in (30, 47):
        out = student(torch.randn(1, 4, size, size), torch.randn(1, 2, size, size))
        assert out.logits.shape == (1, 6, size, size) and out.restored.shape == (1, 4, size, size)


def test_cloudseg_last_fusion_updates_only_what_is_read():
    assert CloudSegNet(4, 2, 3, TINY).fusions[3].update == ()
    assert CloudSegNet(4, 2, 3, TINY, student=True).fusions[3].update == ("optical",)
    assert all(f.update == ("optical", "sar") for f in CloudSegNet(4, 2, 3, TINY).fusions[:3])


def test_cloudseg_with_resnet_encoders():
    net = CloudSegNet(4, 2, 5, RESNET, student=True, norm="group").train()
    assert isinstance(net.optical_encoder, ResNetEncoder)
    assert net.widths == (8, 16, 32, 64) and not hasattr(net.cross_encoder, "stem")
    feats = net.optical_encoder(torch.randn(2, 4, 60, 60))
    assert [f.shape[-1] for f in feats] == [15, 8, 4, 2]
    out = net(torch.randn(2, 4, 60, 60), torch.randn(2, 2, 18, 18))
    assert out.logits.shape == (2, 5, 60, 60) and out.restored.shape == (2, 4, 60, 60)
    (out.logits.sum() + out.restored.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_segnet_and_early_fusion_shapes():
    seg = SegNet(4, 6, TINY).eval()
    out = seg(torch.randn(2, 4, 50, 50))
    assert out.logits.shape == (2, 6, 50, 50) and out.hint.shape == (2, 16, 50, 50) and out.restored is None
    seg = SegNet(2, 3, RESNET, decoder_channels=(16, 8, 8, 8, 4), norm="group").eval()
    assert seg(torch.randn(1, 2, 33, 33)).logits.shape == (1, 3, 33, 33)
    ef = EarlyFusionSegNet(4, 2, 6, TINY).eval()
    assert ef.net.encoder.in_channels == 6
    out = ef(torch.randn(2, 4, 60, 60), torch.randn(2, 2, 18, 18))
    assert out.logits.shape == (2, 6, 60, 60) and out.hint.shape == (2, 16, 60, 60)


def test_unet_decoder_reaches_the_exact_input_size():
    dec = UNetDecoder((8, 16, 32, 64), (16, 8, 8, 8, 8)).eval()  # (BatchNorm cannot train on one 1x1 value)
    for h, w in ((61, 37), (8, 8), (1, 3)):
        feats = [torch.randn(1, c, _ceil(h, s), _ceil(w, s)) for c, s in zip((8, 16, 32, 64), (4, 8, 16, 32))]
        assert dec(feats, (h, w)).shape == (1, 8, h, w)
    with pytest.raises(ValueError):
        UNetDecoder((8, 16, 32, 64), (16, 8, 8))


@pytest.mark.parametrize("student", [False, True])
def test_every_parameter_gets_a_gradient(student):
    torch.manual_seed(0)
    net = CloudSegNet(4, 2, 6, {**TINY, "drop_path": 0.1}, student=student).train()
    out = net(torch.randn(2, 4, 30, 30), torch.randn(2, 2, 9, 9))
    loss = F.cross_entropy(out.logits, torch.randint(0, 6, (2, 30, 30)))
    if student:
        loss = loss + out.restored.square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.filterwarnings("ignore:Grad strides do not match")  # depthwise-conv grads, a CPU layout note
def test_student_under_ddp_without_unused_parameter_search(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = DDP(CloudSegNet(4, 2, 3, TINY, student=True), find_unused_parameters=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(2):
            out = model(torch.randn(2, 4, 20, 20), torch.randn(2, 2, 6, 6))
            opt.zero_grad()
            (out.logits.mean() + out.restored.mean() + out.hint.mean()).backward()
            opt.step()
    finally:
        dist.destroy_process_group()


def test_group_norm_results_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    net = CloudSegNet(4, 2, 3, TINY, student=True, norm="group").train()
    opt, sar = torch.randn(4, 4, 24, 24), torch.randn(4, 2, 8, 8)
    whole = net(opt, sar)
    half = net(opt[:2], sar[:2])
    assert torch.allclose(whole.logits[:2], half.logits, atol=1e-5)
    assert torch.allclose(whole.restored[:2], half.restored, atol=1e-5)


def test_tiny_cloudseg_is_small():
    teacher = sum(p.numel() for p in CloudSegNet(4, 2, 6, TINY).parameters())
    student = sum(p.numel() for p in CloudSegNet(4, 2, 6, TINY, student=True).parameters())
    assert teacher < student < 1_000_000


# --- pretrained weights --------------------------------------------------------------------------

def _save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


def test_pretrained_rgb_first_conv_is_repeated_cyclically_and_scaled(tmp_path):
    torch.manual_seed(0)
    rgb = MiT(3, "tiny").state_dict()
    uri = _save(rgb, tmp_path / "mit_tiny_rgb.pth")
    enc = MiT(4, "tiny")
    load_pretrained(enc, uri)
    w = rgb["patch_embed1.proj.weight"]
    want = torch.stack([w[:, 0], w[:, 1], w[:, 2], w[:, 0]], dim=1) * 3 / 4
    got = enc.state_dict()
    assert torch.allclose(got["patch_embed1.proj.weight"], want)
    assert all(torch.equal(got[k], v) for k, v in rgb.items() if k != "patch_embed1.proj.weight")
    # {"state_dict": ...} files, a DDP "module." prefix and an ImageNet classifier head also load
    wrapped = {"state_dict": {**{f"module.{k}": v for k, v in rgb.items()}}}
    enc2 = MiT(2, "tiny")
    load_pretrained(enc2, _save(wrapped, tmp_path / "wrapped.pth"))
    assert torch.allclose(enc2.patch_embed1.proj.weight, torch.stack([w[:, 0], w[:, 1]], 1) * 1.5)
    load_pretrained(MiT(3, "tiny"), _save({**rgb, "head.weight": torch.zeros(10, 64)}, tmp_path / "h.pth"))


def test_cloudseg_pretrained_loads_every_stream_and_the_cross_stages(tmp_path):
    torch.manual_seed(0)
    rgb = MiT(3, "tiny").state_dict()
    uri = _save(rgb, tmp_path / "w.pth")
    net = build_model({"kind": "cloudseg", "num_classes": 6, "optical": {"in_channels": 4},
                       "sar": {"in_channels": 2}, "encoder": {**TINY, "pretrained": uri}})
    assert torch.equal(net.cross_encoder.block3[0].attn.q.weight, rgb["block3.0.attn.q.weight"])
    assert torch.equal(net.sar_encoder.norm4.weight, rgb["norm4.weight"])
    assert net.optical_encoder.patch_embed1.proj.weight.shape[1] == 4
    assert net.sar_encoder.patch_embed1.proj.weight.shape[1] == 2
    net = build_model({"kind": "segnet", "num_classes": 3, "in_channels": 4, "encoder": {**TINY, "pretrained": uri}})
    assert torch.equal(net.encoder.block2[0].mlp.fc2.weight, rgb["block2.0.mlp.fc2.weight"])


def test_pretrained_resnet_encoder(tmp_path):
    src = ResNetEncoder(3, depth=10, width=8)
    uri = _save(src.state_dict(), tmp_path / "r.pth")
    dst = ResNetEncoder(5, depth=10, width=8)
    load_pretrained(dst, uri)
    w = src.stem[0].weight
    assert torch.allclose(dst.stem[0].weight, w[:, [0, 1, 2, 0, 1]] * 3 / 5)
    assert torch.equal(dst.layer3[0].conv1.weight, src.layer3[0].conv1.weight)


def _seg_spec(**encoder):
    return {"kind": "cloudseg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
            "encoder": {**TINY, **encoder}}


def test_pretrained_errors_name_the_field(tmp_path):
    field = "models.teacher.encoder.pretrained"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    pickled = _save({"state_dict": {"x": torch.nn.Linear(2, 2)}}, tmp_path / "module.pth")  # not weights only
    wrong_variant = _save(MiT(3, "b0").state_dict(), tmp_path / "b0.pth")
    partial = _save({k: v for k, v in MiT(3, "tiny").state_dict().items() if not k.startswith("block4.")},
                    tmp_path / "partial.pth")
    cases = [(str(bad), "not a PyTorch weights file"), (str(tmp_path / "missing.pth"), "cannot read"),
             (pickled, "weights"), (wrong_variant, "patch_embed1.proj.weight"), (partial, "missing keys: block4.0")]
    for uri, text in cases:
        with pytest.raises(ConfigError) as e:
            build_model(_seg_spec(pretrained=uri), field="models.teacher")
        assert e.value.field == field, uri
        assert text in e.value.problem, (uri, e.value.problem)
    extra = _save({**MiT(3, "tiny").state_dict(), "decoder.x": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match="unexpected keys: decoder.x"):
        build_model(_seg_spec(pretrained=extra), field="models.teacher")
    # strict: false loads what matches
    net = build_model(_seg_spec(pretrained=partial, strict=False))
    assert isinstance(net, CloudSegNet)
    build_model(_seg_spec(pretrained=extra, strict=False))


def test_pretrained_from_s3(s3_server, tmp_path):
    from raypipe import storage

    rgb = MiT(3, "tiny").state_dict()
    buf = io.BytesIO()
    torch.save(rgb, buf)
    storage.write_bytes("s3://raypipe-test/weights/mit_tiny.pth", buf.getvalue())
    net = build_model({"kind": "segnet", "num_classes": 3, "in_channels": 3,
                       "encoder": {**TINY, "pretrained": "s3://raypipe-test/weights/mit_tiny.pth"}})
    assert torch.equal(net.encoder.patch_embed1.proj.weight, rgb["patch_embed1.proj.weight"])


# --- factory ---------------------------------------------------------------------------------------

def test_factory_builds_segmentation_models_and_knows_two_input_kinds():
    assert {"cloudseg", "early_fusion_seg", "multimodal", "early_fusion"} <= TWO_INPUT_KINDS
    assert "segnet" not in TWO_INPUT_KINDS and "resnet" not in TWO_INPUT_KINDS
    spec = _seg_spec()
    t = build_model(spec)
    assert isinstance(t, CloudSegNet) and not t.student and t.decoder.decoder_channels == (32, 16, 16, 16, 16)
    s = build_model({**spec, "student": True, "norm": "group", "decoder_channels": [16, 16, 8, 8, 8]})
    assert s.student and s.decoder.out_channels == 8 and isinstance(s.decoder.blocks[0].conv1[1], torch.nn.GroupNorm)
    assert model_spec_in_channels(spec) == {"optical": 4, "sar": 2}
    check_model_inputs(spec, {"optical": 4, "sar": 2})
    with pytest.raises(ConfigError) as e:
        check_model_inputs(spec, {"optical": 3, "sar": 2}, field="models.teacher")
    assert e.value.field == "models.teacher.optical.in_channels"
    seg = build_model({"kind": "segnet", "num_classes": 6, "in_channels": 2, "encoder": {"type": "resnet"}})
    assert isinstance(seg, SegNet) and seg.encoder.widths == (64, 128, 256, 512)
    assert seg.decoder.decoder_channels == (256, 128, 64, 32, 16)
    assert model_spec_in_channels({"kind": "segnet", "in_channels": 2, "num_classes": 6}) == {"input": 2}
    ef = build_model({"kind": "early_fusion_seg", "num_classes": 6, "optical": {"in_channels": 4},
                      "sar": {"in_channels": 2}})
    assert isinstance(ef, EarlyFusionSegNet)
    b0 = build_model({"kind": "segnet", "num_classes": 6, "in_channels": 4, "encoder": {"variant": "b0"}})
    assert b0.encoder.drop_path == 0.1 and b0.encoder.widths == (32, 64, 160, 256)


def test_register_model_two_inputs():
    kind = "test_seg_two_input_kind"
    try:
        @register_model(kind, two_inputs=True)
        def _build(spec, field):
            return torch.nn.Identity()

        assert kind in TWO_INPUT_KINDS and kind in MODELS
        assert model_spec_in_channels({"kind": kind, "optical": {"in_channels": 3}, "sar": {"in_channels": 1}}) \
            == {"optical": 3, "sar": 1}
    finally:
        TWO_INPUT_KINDS.discard(kind)
        MODELS._items.pop(kind, None)


def _with(spec: dict, path: str, value):
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize("path,value,field", [
    ("colour", 1, "m.colour"),
    ("encoder.colour", 1, "m.encoder.colour"),
    ("encoder.type", "vit", "m.encoder.type"),
    ("encoder.variant", "b9", "m.encoder.variant"),
    ("encoder.drop_path", 1.0, "m.encoder.drop_path"),
    ("encoder.drop_path", True, "m.encoder.drop_path"),
    ("encoder.pretrained", 3, "m.encoder.pretrained"),
    ("encoder.strict", "yes", "m.encoder.strict"),
    ("encoder", [1], "m.encoder"),
    ("optical.in_channels", KeyError, "m.optical.in_channels"),
    ("optical.in_channels", 0, "m.optical.in_channels"),
    ("optical.depth", 18, "m.optical.depth"),
    ("sar", KeyError, "m.sar"),
    ("num_classes", KeyError, "m.num_classes"),
    ("num_classes", 1, "m.num_classes"),
    ("decoder_channels", [16, 8], "m.decoder_channels"),
    ("decoder_channels", [16, 8, 8, 8, 0], "m.decoder_channels"),
    ("decoder_channels", "16", "m.decoder_channels"),
    ("student", 1, "m.student"),
    ("norm", "layer", "m.norm"),
])
def test_cloudseg_factory_errors_name_the_field(path, value, field):
    with pytest.raises(ConfigError) as e:
        build_model(_with(_seg_spec(), path, value), field="m")
    assert e.value.field == field
    assert field in str(e.value)


@pytest.mark.parametrize("spec,field", [
    ({"kind": "cloudseg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
      "encoder": {"type": "resnet", "variant": "b0"}}, "m.encoder.variant"),
    ({"kind": "cloudseg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
      "encoder": {"type": "resnet", "depth": 20}}, "m.encoder.depth"),
    ({"kind": "segnet", "num_classes": 6, "in_channels": 4, "student": True}, "m.student"),
    ({"kind": "segnet", "num_classes": 6}, "m.in_channels"),
    ({"kind": "segnet", "num_classes": 6, "in_channels": 4, "optical": {"in_channels": 4}}, "m.optical"),
    ({"kind": "early_fusion_seg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
      "in_channels": 6}, "m.in_channels"),
    ({"kind": "early_fusion_seg", "num_classes": 6, "optical": {"in_channels": 4}, "sar": {"in_channels": 2},
      "encoder": {"type": "mit", "depth": 18}}, "m.encoder.depth"),
])
def test_segnet_and_early_fusion_factory_errors(spec, field):
    with pytest.raises(ConfigError) as e:
        build_model(spec, field="m")
    assert e.value.field == field
