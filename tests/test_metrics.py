"""Metrics against hand-computed cases, cloud buckets, streaming/merged accumulation, plotting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.metrics import (
    CLEAR_MAX,
    CLOUD_BUCKETS,
    CLOUDY_MIN,
    ConfusionAccumulator,
    cloud_bucket,
    cloud_buckets,
    confusion_matrix,
    evaluate,
    metrics_from_confusion,
    plot_confusion_matrix,
    to_mlflow_metrics,
)


def test_confusion_matrix_rows_are_reference():
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert confusion_matrix(torch.tensor([1, 1]), torch.tensor([1, 255]), 3, ignore_index=255).sum() == 1
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0.5]), np.array([0]), 3)


def test_kappa_oa_on_known_matrix():
    # N=50, p_o = 35/50 = 0.7, p_e = (25*30 + 25*20)/50^2 = 0.5, kappa = 0.2/0.5 = 0.4
    m = metrics_from_confusion(np.array([[20, 5], [10, 15]]), ["a", "b"])
    assert m["n"] == 50
    assert m["oa"] == pytest.approx(0.7)
    assert m["kappa"] == pytest.approx(0.4)
    assert m["aa"] == pytest.approx((20 / 25 + 15 / 25) / 2)
    assert m["per_class"]["a"]["precision"] == pytest.approx(20 / 30)
    assert m["per_class"]["b"]["f1"] == pytest.approx(2 * 15 / (25 + 20))
    assert m["absent_classes"] == []
    # perfect agreement with two classes: kappa 1; a single class on both sides: undefined
    assert metrics_from_confusion(np.diag([3, 4]))["kappa"] == pytest.approx(1.0)
    assert metrics_from_confusion(np.array([[5, 0], [0, 0]]))["kappa"] is None


def test_aa_reports_absent_class_and_macro_f1():
    target = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 0, 2, 1, 0])
    r = evaluate(pred, target, None, 4, ["forest", "water", "urban", "snow"])
    m = r["overall"]
    assert r["buckets"] == {}
    assert m["oa"] == pytest.approx(3 / 5)
    assert m["aa"] == pytest.approx((2 / 3 + 1 / 2) / 2)          # over present classes only
    assert m["absent_classes"] == ["urban", "snow"]               # reported, not dropped
    assert m["per_class"]["urban"]["recall"] is None
    assert m["per_class"]["urban"]["precision"] == 0.0            # predicted once, wrongly
    assert m["per_class"]["urban"]["f1"] == 0.0
    assert m["per_class"]["snow"]["f1"] is None                   # neither true nor predicted
    # macro-F1 over defined F1: forest 2*2/(3+3), water 2*1/(2+1), urban 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["per_class"]["forest"]["support"] == 3 and m["per_class"]["forest"]["predicted"] == 3


def test_cloud_buckets_thresholds():
    assert (CLEAR_MAX, CLOUDY_MIN, CLOUD_BUCKETS) == (0.1, 0.9, ("clear", "partly", "cloudy"))
    assert cloud_bucket(0.0) == "clear" and cloud_bucket(0.0999) == "clear"
    assert cloud_bucket(0.1) == "partly" and cloud_bucket(0.9) == "partly"
    assert cloud_bucket(0.9001) == "cloudy" and cloud_bucket(1.0) == "cloudy"
    assert cloud_buckets([0.05, 0.5, 0.95]).tolist() == ["clear", "partly", "cloudy"]
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError):
            cloud_bucket(bad)
    with pytest.raises(ValueError):
        cloud_buckets([0.2, float("nan")])


def test_evaluate_per_bucket_with_empty_bucket():
    pred = np.array([0, 1, 1, 0])
    target = np.array([0, 1, 0, 0])
    frac = np.array([0.0, 0.05, 0.5, 0.6])  # no cloudy sample
    r = evaluate(pred, target, frac, 2, ["a", "b"])
    assert r["buckets"]["clear"]["n"] == 2 and r["buckets"]["clear"]["oa"] == 1.0
    assert r["buckets"]["partly"]["oa"] == 0.5
    cloudy = r["buckets"]["cloudy"]
    assert cloudy["n"] == 0
    assert all(cloudy[k] is None for k in ("oa", "aa", "macro_f1", "kappa"))
    flat = to_mlflow_metrics(r)
    assert flat["oa"] == 0.75 and flat["clear/oa"] == 1.0 and flat["cloudy/n"] == 0.0
    assert "cloudy/oa" not in flat
    assert {"aa", "macro_f1", "kappa", "n", "partly/kappa", "recall/a", "clear/f1/b"} <= set(flat)
    assert all(isinstance(v, float) for v in flat.values())
    # empty input does not crash either
    e = evaluate(np.array([], dtype=int), np.array([], dtype=int), np.array([]), 2)
    assert e["overall"]["n"] == 0 and e["overall"]["oa"] is None and e["buckets"]["clear"]["n"] == 0


def test_mlflow_keys_are_safe_for_class_names():
    r = evaluate(np.array([0, 1]), np.array([0, 1]), None, 2, ["Dense Forests", "Snow/Ice"])
    flat = to_mlflow_metrics(r, prefix="test/")
    assert "test/recall/Dense_Forests" in flat and "test/f1/Snow_Ice" in flat
    assert "test/oa" in flat


def test_accumulator_merge_equals_whole():
    rng = np.random.default_rng(0)
    n, k = 300, 5
    pred, target, frac = rng.integers(0, k, n), rng.integers(0, k, n), rng.random(n)
    whole = evaluate(pred, target, frac, k)
    parts = []
    for sl in (slice(0, 70), slice(70, 200), slice(200, n)):  # e.g. three workers
        a = ConfusionAccumulator(k)
        for i in range(sl.start, sl.stop, 32):  # streamed in batches
            j = min(i + 32, sl.stop)
            a.update(torch.as_tensor(pred[i:j]), target[i:j], frac[i:j])
        parts.append(a)
    merged = ConfusionAccumulator.merged(parts)
    assert merged.result() == whole
    assert (parts[0] + parts[1] + parts[2]).result() == whole
    restored = ConfusionAccumulator.from_array(merged.to_array())
    assert restored.result() == whole
    assert merged.counts[1:].sum() == merged.counts[0].sum() == n
    with pytest.raises(ValueError):
        merged.merge(ConfusionAccumulator(k + 1))


def test_accumulator_all_reduce_single_process(tmp_path):
    import torch.distributed as dist

    a = ConfusionAccumulator(3)
    a.update([0, 1, 2], [0, 2, 2], [0.0, 0.5, 1.0])
    before = a.to_array()
    assert np.array_equal(a.all_reduce().to_array(), before)  # no group: no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        a.all_reduce()
    finally:
        dist.destroy_process_group()
    assert np.array_equal(a.to_array(), before) and a.has_buckets


def _all_reduce_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        acc = ConfusionAccumulator(3)
        if rank == 0:  # two samples: (true 0, pred 0, clear), (true 2, pred 1, cloudy)
            acc.update([0, 1], [0, 2], [0.0, 1.0])
        else:  # three samples: (true 2, pred 2, partly) twice, (true 1, pred 0, clear)
            acc.update([2, 2, 0], [2, 2, 1], [0.5, 0.5, 0.05])
        np.save(f"{out_dir}/rank{rank}.npy", acc.all_reduce().to_array())
    finally:
        dist.destroy_process_group()


def test_accumulator_all_reduce_sums_two_gloo_processes(tmp_path):
    """Two real processes each fill their own accumulator; after all_reduce both hold the sum,
    which equals the confusion matrices written out by hand (rows = truth, columns = prediction)."""
    import torch.multiprocessing as mp

    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert np.array_equal(r0, r1)
    overall = r0[0]
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1  # rank 0, sample 1
    expected[2, 1] = 1  # rank 0, sample 2
    expected[2, 2] = 2  # rank 1, samples 1-2
    expected[1, 0] = 1  # rank 1, sample 3
    assert np.array_equal(overall, expected)
    # per bucket (clear, partly, cloudy, after the overall matrix): clear holds (0,0) and (1,0),
    # partly the two (2,2), cloudy the (2,1)
    clear, partly, cloudy = r0[1], r0[2], r0[3]
    assert clear[0, 0] == 1 and clear[1, 0] == 1 and clear.sum() == 2
    assert partly[2, 2] == 2 and partly.sum() == 2
    assert cloudy[2, 1] == 1 and cloudy.sum() == 1


def test_plot_confusion_matrix_writes_png(tmp_path):
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    out = plot_confusion_matrix(cm, ["Forest", "Water", "Urban"], tmp_path / "sub" / "cm.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
