"""Segmentation task pieces on hand-computed tensors: metrics per scope, CloudSeg's losses, sliding-window
inference, aligned crops, the WorldCover mapping and the step schedule. Expected values are worked out
here by hand (or by a direct formula), never taken from the code under test."""

import math

import numpy as np
import pytest
import torch

from raypipe.data.datasets.m3mcr import M3M_CR
from raypipe.data.pipeline import aligned_crop, grid_unit
from raypipe.engine.loop import step_factor
from raypipe.engine.segmentation import SegmentationConfig, SegmentationTask, sliding_window, window_offsets
from raypipe.errors import ConfigError
from raypipe.losses.segmentation import cloud_removal_loss, masked_hint_loss
from raypipe.metrics import to_mlflow_metrics
from raypipe.metrics.segmentation import SegmentationAccumulator, mask_to_grid, segmentation_metrics


# --- metrics ------------------------------------------------------------------------------------

def test_iou_and_miou_from_a_confusion_matrix():
    m = segmentation_metrics([[3, 1], [2, 4]], ["a", "b"])
    # IoU_a = 3 / (4 + 5 - 3), IoU_b = 4 / (6 + 5 - 4)
    assert m["per_class"]["a"]["iou"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["iou"] == pytest.approx(4 / 7)
    assert m["miou"] == pytest.approx((0.5 + 4 / 7) / 2)
    assert m["oa"] == pytest.approx(7 / 10) and m["aa"] == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_class_absent_on_both_sides_is_left_out_of_miou_and_missed_class_counts_zero():
    # class c never in the reference nor predicted: left out; class b in the reference, never predicted: IoU 0
    m = segmentation_metrics([[2, 0, 0], [1, 0, 0], [0, 0, 0]], ["a", "b", "c"])
    assert m["per_class"]["c"]["iou"] is None
    assert m["per_class"]["b"]["iou"] == 0.0
    assert m["miou"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_accumulator_splits_cloud_free_and_cloudy_pixels_and_tile_buckets():
    # one tile, 2x2 labels; the cloud mask is 4x4 (optical grid): nearest to 2x2 takes rows/cols 0 and 2
    label = np.array([[[0, 1], [1, 255]]])
    pred = np.array([[[0, 0], [1, 1]]])
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, 0, 2] = 1  # -> label pixel (0, 1) cloudy
    mask[0, 1, 0] = 1  # row 1 is not sampled: no effect
    acc = SegmentationAccumulator(2)
    acc.update(pred, label, mask, np.array([0.5]))
    res = acc.result(["a", "b"])
    assert res["overall"]["n"] == 3  # 255 ignored
    assert res["pixels"]["cloudy"]["confusion"] == [[0, 0], [1, 0]]  # (0,1): label b, predicted a
    assert res["pixels"]["clear"]["confusion"] == [[1, 0], [0, 1]]
    assert res["buckets"]["partly"]["n"] == 3 and res["buckets"]["clear"]["n"] == 0
    flat = to_mlflow_metrics(res, prefix="test/")
    assert flat["test/pixels/cloudy/n"] == 1.0 and flat["test/pixels/clear/oa"] == 1.0
    assert flat["test/iou/a"] == pytest.approx(1 / 2)  # a: tp 1, reference 1, predicted 2


def test_mask_to_grid_is_nearest_like_cloudseg():
    mask = np.arange(300 * 300).reshape(300, 300)
    small = mask_to_grid(mask, (90, 90))
    rows = np.floor(np.arange(90) * 300 / 90).astype(int)
    assert np.array_equal(small, mask[rows][:, rows])


# --- losses -------------------------------------------------------------------------------------

def test_charbonnier_cloud_removal_loss_by_hand():
    restored = torch.tensor([[[[1.0, 2.0]]]])
    target = torch.zeros_like(restored)
    mask = torch.tensor([[[1, 0]]])
    expected = ((1 + 5) * (1 + 1e-6) ** 0.45 + 1 * (4 + 1e-6) ** 0.45) / 2
    assert float(cloud_removal_loss(restored, target, mask)) == pytest.approx(expected, rel=1e-6)


def test_hint_loss_counts_cloud_free_pixels_only():
    student = torch.tensor([[[[1.0, 3.0]], [[2.0, 1.0]]]], requires_grad=True)  # (1, 2 channels, 1, 2)
    teacher = torch.zeros(1, 2, 1, 2)
    mask = torch.tensor([[[1, 0]]])  # pixel 0 cloudy
    # cloud-free pixel 1: channels 3 and 1 -> 9 + 1; four elements in all, two cloud-free
    assert float(masked_hint_loss(student.detach(), teacher, mask, "all")) == pytest.approx(10 / 4)
    assert float(masked_hint_loss(student.detach(), teacher, mask, "clear")) == pytest.approx(10 / 2)
    masked_hint_loss(student, teacher, mask).backward()
    assert torch.all(student.grad[..., 0] == 0) and torch.all(student.grad[..., 1] != 0)
    other = student.detach().clone()
    other[..., 0] = 100.0  # whatever the student does under clouds changes nothing
    assert float(masked_hint_loss(other, teacher, mask)) == pytest.approx(10 / 4)


# --- sliding window -----------------------------------------------------------------------------

@pytest.mark.parametrize("size,window,stride", [(300, 160, 80), (100, 60, 20), (97, 40, 30), (50, 60, 10)])
def test_windows_cover_every_pixel(size, window, stride):
    count = np.zeros(size, int)
    for o in window_offsets(size, window, stride):
        count[o:o + min(window, size)] += 1
    assert count.min() >= 1 and window_offsets(size, window, stride)[0] == 0
    if window < size:
        assert window_offsets(size, window, stride)[-1] == size - window


def test_cloudseg_offsets_on_300_px():
    assert window_offsets(300, 160, 80) == [0, 80, 140]


def test_sliding_window_equals_whole_tile_for_a_translation_invariant_model():
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(4, 3, kernel_size=1)
    optical = torch.randn(2, 4, 300, 300)
    with torch.no_grad():
        whole = pointwise(optical)
        windowed = sliding_window(lambda o, s: pointwise(o), optical, None, (300, 300), (300, 300), 160, 80)
    assert windowed.shape == whole.shape
    assert torch.allclose(windowed, whole, atol=1e-5)


def test_sliding_window_puts_sar_and_labels_at_the_same_place_on_m3mcr_grids():
    # 300 px optical, 90 px SAR and labels: an identity "model" on SAR must give back the SAR tile exactly
    sar = torch.randn(1, 2, 90, 90)
    optical = torch.zeros(1, 4, 300, 300)
    out = sliding_window(lambda o, s: s, optical, sar, (300, 300), (90, 90), 160, 80)
    assert torch.allclose(out, sar, atol=1e-6)


def test_sliding_window_off_the_label_grid_is_a_clear_error():
    sar = torch.randn(1, 2, 90, 90)
    with pytest.raises(ConfigError, match="task.window"):
        sliding_window(lambda o, s: s, torch.zeros(1, 4, 300, 300), sar, (300, 300), (90, 90), 155, 80)


def test_task_infer_returns_label_grid_logits():
    task = SegmentationTask(3, config=SegmentationConfig(window=60, stride=20))
    model = torch.nn.Conv2d(4, 3, 1)
    batch = {"optical": torch.randn(2, 4, 100, 100), "label_map": torch.zeros(2, 30, 30, dtype=torch.long)}
    out = task.infer(model, batch, "optical")
    assert out.shape == (2, 3, 30, 30)


# --- data ---------------------------------------------------------------------------------------

def test_worldcover_no_data_snow_mangrove_moss_are_ignored():
    codes = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100], dtype=np.uint8)
    expected = [255, 0, 1, 1, 2, 3, 4, 255, 5, 5, 255, 255]
    assert M3M_CR.map_labels(codes[None, None, :]).ravel().tolist() == expected


def test_aligned_crop_cuts_every_grid_at_the_same_place():
    assert grid_unit(0.3) == 10 and grid_unit(1.0) == 1
    h = 100
    rows, cols = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
    optical = np.stack([rows, cols]).astype(np.float32)  # value = own coordinates
    lr, lc = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    sample = {"optical": optical, "cloud_mask": (rows % 7 == 0).astype(np.uint8),
              "label_map": (lr * 100 + lc).astype(np.int64), "sar": np.stack([lr, lc]).astype(np.float32)}
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(30):
        out = aligned_crop(sample, 60, 0.3, rng)
        r, c = int(out["optical"][0, 0, 0]), int(out["optical"][1, 0, 0])
        seen.add((r, c))
        assert r % 10 == 0 and c % 10 == 0 and out["optical"].shape == (2, 60, 60)
        assert out["label_map"].shape == (18, 18) and out["label_map"][0, 0] == (r * 3 // 10) * 100 + c * 3 // 10
        assert out["sar"][0, 0, 0] == r * 3 // 10 and np.array_equal(out["cloud_mask"], sample["cloud_mask"][r:r + 60, c:c + 60])
    assert len(seen) > 5  # the corner is random


def test_step_schedule_halves_every_five_epochs_from_ten():
    factors = [step_factor(e, start=10, every=5, gamma=0.5) for e in range(21)]
    assert factors == [1.0] * 10 + [0.5] * 5 + [0.25] * 5 + [0.125]
    assert math.isclose(step_factor(29, 10, 5, 0.5), 0.5 ** 4)
