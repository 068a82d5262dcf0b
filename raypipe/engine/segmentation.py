"""The segmentation task: per-pixel land cover on the label grid, scored for all, cloud-free and cloudy
pixels and per tile cloud bucket (:mod:`raypipe.metrics.segmentation`).

A segmentation model returns logits at the resolution of its input (an optical tile, or a SAR tile for
a SAR-only model); the task brings them to the **label grid** bilinearly (M3M-CR: 300 px optical at 3 m
↔ 90 px labels at 10 m), as CloudSeg does. Losses (:mod:`raypipe.methods.cloudseg.objective`) use
:func:`to_label_grid` the same way.

**Sliding-window inference** (``task.window``, ``task.stride``, optical pixels): windows of ``window``
at offsets ``0, stride, 2·stride, …`` in each direction, the last one flush with the tile edge (CloudSeg
on a 300 px tile: window 160, stride 80 → offsets {0, 80, 140}², 3 × 3 windows). Each window's logits are
resized to its footprint on the label grid and the overlapping windows' logits are **averaged**. The
SAR and label crops of a window sit at the same place on their own grids, so every offset and the
window must fall on the label grid (on M3M-CR: multiples of 10 optical px). ``window: 0`` (or one at
least the tile's size) runs the whole tile in one pass.

Configuration (the method's ``task`` section, e.g. ``--set task.window=160``): ``window``, ``stride``
(0 = ``window // 2``) and ``examples``, the number of test tiles drawn in the ``examples.png`` that
each evaluation logs to MLflow (prediction beside the label and the cloud mask).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from raypipe.clouds.buckets import CLOUD_BUCKETS
from raypipe.engine.objective import forward, main_logits
from raypipe.engine.registry import TASKS
from raypipe.engine.task import COVERAGE_BINS, Task, _buckets_of, _num
from raypipe.errors import ConfigError
from raypipe.metrics.segmentation import SegmentationAccumulator, mask_to_grid

__all__ = ["SegmentationConfig", "SegmentationTask", "sliding_window", "window_offsets", "to_label_grid"]


@dataclass
class SegmentationConfig:
    window: int = 0  # sliding-window side in optical pixels; 0 = the whole tile in one pass
    stride: int = 0  # 0 = window // 2
    examples: int = 4  # test tiles drawn in each evaluation's examples.png

    def validate(self, path: str = "task") -> None:
        if self.window < 0:
            raise ConfigError(f"{path}.window", "must be >= 0 (0 = whole tile)")
        if self.stride < 0 or (self.window and self.stride > self.window):
            raise ConfigError(f"{path}.stride", f"must be within [0, window={self.window}] (0 = window // 2)")
        if self.examples < 0:
            raise ConfigError(f"{path}.examples", "must be >= 0")


def to_label_grid(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, K, h, w) resized bilinearly to the label grid ``size`` (unchanged if already there)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def window_offsets(size: int, window: int, stride: int) -> list[int]:
    """Offsets of the windows along one axis: ``0, stride, …``, the last one flush with the edge; one
    window at 0 when ``window`` is 0 or covers the whole axis."""
    if window <= 0 or window >= size:
        return [0]
    stride = stride or max(window // 2, 1)
    offsets = list(range(0, size - window + 1, stride))
    if offsets[-1] + window < size:
        offsets.append(size - window)
    return offsets


def _on_grid(offset: int, size: int, other: int, what: str) -> int:
    """``offset`` (optical px) on a grid of ``other`` px per ``size`` optical px, checked to be whole."""
    if (offset * other) % size:
        raise ConfigError("task.window", f"a window edge at optical pixel {offset} falls between {what} pixels "
                          f"({size} optical px ↔ {other} {what} px); use a window and stride on the {what} grid")
    return offset * other // size


def sliding_window(run, optical: torch.Tensor | None, sar: torch.Tensor | None, tile: tuple[int, int],
                   label: tuple[int, int], window: int, stride: int) -> torch.Tensor:
    """Averaged window logits on the label grid ``label`` of a tile of ``tile`` optical pixels.

    ``run(optical_crop, sar_crop)`` returns logits (B, K, h, w) at any resolution (either crop is None
    when the model does not take it). Returns (B, K, *label)."""
    H, W = tile
    lh, lw = label
    rows, cols = window_offsets(H, window, stride), window_offsets(W, window, stride)
    wh, ww = (min(window, H), min(window, W)) if window > 0 else (H, W)
    total = count = None
    for r in rows:
        for c in cols:
            o = optical[..., r:r + wh, c:c + ww] if optical is not None else None
            s = None
            if sar is not None:
                sh, sw = sar.shape[-2:]
                sr, sc = _on_grid(r, H, sh, "SAR"), _on_grid(c, W, sw, "SAR")
                s = sar[..., sr:sr + _on_grid(wh, H, sh, "SAR"), sc:sc + _on_grid(ww, W, sw, "SAR")]
            lr, lc = _on_grid(r, H, lh, "label"), _on_grid(c, W, lw, "label")
            lwh, lww = _on_grid(wh, H, lh, "label"), _on_grid(ww, W, lw, "label")
            logits = to_label_grid(run(o, s).float(), (lwh, lww))
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], lh, lw))
                count = logits.new_zeros((1, 1, lh, lw))
            total[..., lr:lr + lwh, lc:lc + lww] += logits
            count[..., lr:lr + lwh, lc:lc + lww] += 1
    if (count == 0).any():  # cannot happen with flush-to-edge offsets; a guard against a wrong change
        raise RuntimeError("sliding-window inference left label pixels uncovered")
    return total / count


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """Pixel-wise land cover: OA, mean accuracy, mIoU and per-class IoU for all, cloud-free and cloudy
    pixels and per tile cloud bucket; sliding-window inference."""

    name = "segmentation"
    label_key = "label_map"
    Config = SegmentationConfig
    selection_metric = "miou"

    def __init__(self, num_classes: int, class_names=None, config: SegmentationConfig | None = None):
        super().__init__(num_classes, class_names, config)
        self.config = config or SegmentationConfig()

    # --- inference ------------------------------------------------------------------------------
    def infer(self, model, batch: Mapping[str, Any], inputs: str) -> torch.Tensor:
        """Logits (B, K, h, w) on the label grid, by sliding windows over the tile."""
        optical = batch["optical"]
        label = tuple(batch["label_map"].shape[-2:]) if "label_map" in batch else tuple(batch["sar"].shape[-2:])

        def run(o, s):
            crop = {"optical": o, "sar": s}
            return main_logits(forward(model, crop, inputs))

        return sliding_window(run, optical if inputs != "sar" else None, batch.get("sar") if inputs != "optical" else None,
                              tuple(optical.shape[-2:]), label, self.config.window, self.config.stride)

    # --- per-epoch metrics ------------------------------------------------------------------------
    def accumulator(self) -> "_SegAccumulator":
        return _SegAccumulator(SegmentationAccumulator(self.num_classes), self.class_names)

    def epoch_metrics(self, result: Mapping[str, Any]) -> dict[str, float]:
        out = {"miou": _num(result["overall"]["miou"]), "oa": _num(result["overall"]["oa"])}
        for scope, res in result["pixels"].items():
            if res["n"]:
                out[f"pixels/{scope}/miou"] = _num(res["miou"])
        return out

    # --- evaluation -------------------------------------------------------------------------------
    def inference_columns(self, output: Any, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        pred = output.argmax(dim=1).to(torch.uint8).cpu().numpy()
        label = np.asarray(batch["label_map"])
        mask = mask_to_grid(np.asarray(batch["cloud_mask"]), label.shape[-2:]).astype(np.uint8)
        return {"sample_id": np.asarray(batch["sample_id"]), "pred": pred, "label_map": label.astype(np.uint8),
                "cloud_mask": mask, "cloud_fraction": np.asarray(batch["cloud_fraction"]),
                "bucket_fraction": np.asarray(_buckets_of(batch))}

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        acc = SegmentationAccumulator(self.num_classes)
        fraction = np.asarray(_buckets_of(columns))
        acc.update(columns["pred"], columns["label_map"], columns["cloud_mask"], fraction)
        result = acc.result(self.class_names or None)
        result["tiles"] = int(len(columns["pred"]))
        index = np.clip((fraction * COVERAGE_BINS).astype(int), 0, COVERAGE_BINS - 1)
        result["coverage"] = []
        for b in range(COVERAGE_BINS):  # pixel metrics of the tiles in each tenth of cloud coverage
            sel = index == b
            acc_b = SegmentationAccumulator(self.num_classes)
            if sel.any():
                acc_b.update(columns["pred"][sel], columns["label_map"][sel], columns["cloud_mask"][sel], fraction[sel])
            m = acc_b.result(self.class_names or None)["overall"]
            result["coverage"].append({"lo": b / COVERAGE_BINS, "hi": (b + 1) / COVERAGE_BINS, "tiles": int(sel.sum()),
                                       "n": m["n"], "oa": m["oa"], "miou": m["miou"]})
        return result

    def figures(self, columns: Mapping[str, np.ndarray]) -> dict[str, bytes]:
        """``examples.png``: for a few test tiles (spread over cloud coverage), the label, the
        prediction and the cloud mask side by side."""
        n = min(self.config.examples, len(columns.get("pred", [])))
        if n == 0:
            return {}
        order = np.argsort(np.asarray(columns["bucket_fraction"]), kind="stable")
        picks = order[np.linspace(0, len(order) - 1, n).round().astype(int)]
        return {"examples.png": examples_png(columns, picks, self.class_names, self.num_classes)}

    def table(self, method, stages: Mapping, split: str = "test") -> str:
        return segmentation_table(method, stages, split)


class _SegAccumulator:
    def __init__(self, acc: SegmentationAccumulator, class_names: list[str]):
        self.acc, self.class_names = acc, class_names

    def update(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> None:
        self.acc.update(pred.cpu(), batch["label_map"].cpu(), batch["cloud_mask"].cpu(), _buckets_of(batch).cpu())

    def all_reduce(self) -> "_SegAccumulator":
        self.acc.all_reduce(device=torch.device("cpu"))
        return self

    def result(self) -> dict[str, Any]:
        return self.acc.result(self.class_names or None)


# --- what people see --------------------------------------------------------------------------------

def _pct(x) -> str:
    return f"{100 * x:6.1f}" if x is not None else "   n/a"


def segmentation_table(method, stages: Mapping, split: str = "test") -> str:
    """mIoU / OA / mean accuracy (%) per table row, for all, cloud-free and cloudy pixels, and mIoU per
    tile cloud bucket, with pixel and tile counts."""
    from raypipe.engine.report import table_rows

    rows, labels = table_rows(method, stages, split)
    width = max([34, *(len(v) for v in labels.values())])
    head = (f"{'model':<{width}} {'mIoU':>6} {'OA':>6} {'mAcc':>6} | {'clear px':>8} {'':>6} | {'cloudy px':>9} {'':>5}"
            f" | {'mIoU by tile: clear':>19} {'partly':>6} {'cloudy':>6}")
    sub = (f"{'':<{width}} {'':>6} {'':>6} {'':>6} | {'mIoU':>8} {'OA':>6} | {'mIoU':>9} {'OA':>5} |"
           f" {'':>19} {'':>6} {'':>6}")
    lines = [head, sub, "-" * len(head)]
    for r in rows:
        res = stages[r.stage].evaluations[r.prefix]
        o, px, b = res["overall"], res.get("pixels", {}), res.get("buckets", {})
        clear, cloudy = px.get("clear", {}), px.get("cloudy", {})
        lines.append(f"{labels[r]:<{width}} {_pct(o.get('miou'))} {_pct(o.get('oa'))} {_pct(o.get('aa'))} | "
                     f"{_pct(clear.get('miou')):>8} {_pct(clear.get('oa'))} | {_pct(cloudy.get('miou')):>9} "
                     f"{_pct(cloudy.get('oa')).strip():>5} | {_pct(b.get('clear', {}).get('miou')):>19} "
                     f"{_pct(b.get('partly', {}).get('miou'))} {_pct(b.get('cloudy', {}).get('miou'))}")
    if rows:  # the counts of the row that saw the most cloud (the cloud-free-input row sees none)
        res = max((stages[r.stage].evaluations[r.prefix] for r in rows),
                  key=lambda e: e.get("pixels", {}).get("cloudy", {}).get("n", 0))
        px = res.get("pixels", {})
        tiles = "/".join(str(res.get("buckets", {}).get(k, {}).get("n", 0)) for k in CLOUD_BUCKETS)
        lines.append(f"labelled pixels: {res['overall']['n']} ({px.get('clear', {}).get('n', 0)} cloud-free, "
                     f"{px.get('cloudy', {}).get('n', 0)} cloudy) in {res.get('tiles', '?')} test tiles; "
                     f"pixels by tile bucket clear/partly/cloudy: {tiles}")
    return "\n".join(lines)


def _palette(k: int) -> np.ndarray:
    base = np.array([[34, 139, 34], [189, 183, 107], [240, 200, 60], [200, 30, 30], [160, 110, 70], [30, 90, 200],
                     [120, 120, 120], [200, 120, 200], [90, 200, 200], [250, 150, 50]], dtype=np.uint8)
    return base[np.arange(k) % len(base)]


def examples_png(columns: Mapping[str, np.ndarray], picks, class_names, num_classes: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pal = np.concatenate([_palette(num_classes), np.zeros((256 - num_classes, 3), np.uint8)])
    pal[255] = (255, 255, 255)  # ignore
    fig = Figure(figsize=(7.5, 2.4 * len(picks)))
    FigureCanvasAgg(fig)
    for i, j in enumerate(picks):
        panels = (("label", pal[columns["label_map"][j]]), ("prediction", pal[columns["pred"][j]]),
                  ("cloud mask", columns["cloud_mask"][j]))
        for k, (title, img) in enumerate(panels):
            ax = fig.add_subplot(len(picks), 3, 3 * i + k + 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{columns['sample_id'][j]} {title}" if k == 0 else
                         (f"{title} ({100 * float(columns['bucket_fraction'][j]):.0f} % cloud)" if k == 2 else title),
                         fontsize=7)
    from matplotlib.patches import Patch

    names = list(class_names or range(num_classes))
    fig.legend(handles=[Patch(color=pal[i] / 255.0, label=str(n)) for i, n in enumerate(names)]
               + [Patch(facecolor=(1, 1, 1), edgecolor=(0, 0, 0), label="ignore")], loc="lower center", ncol=min(len(names) + 1, 5), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
