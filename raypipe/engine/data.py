"""The data a method's stages read: manifests resolved (the generated benchmark made if none is
given), one Ray Data pipeline per view a stage declares, the class list and the data hash that enters
every stage key."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from raypipe import storage
from raypipe.config import from_dict, to_dict
from raypipe.data.manifest import content_hash, read_manifest
from raypipe.data.pipeline import DataConfig, TilePipeline
from raypipe.engine.method import View
from raypipe.errors import ConfigError

log = logging.getLogger(__name__)


def ensure_benchmark(cfg) -> str:
    """The generated benchmark's manifest, generating the tiles and the manifest if absent."""
    from raypipe.data.prepare import prepare
    from raypipe.synthetic import generate

    b = cfg.data.benchmark
    out = b.out if not storage.is_local(b.out) else os.path.abspath(b.out)
    manifest = storage.join(out, "manifest.parquet")
    if storage.exists(manifest) and _has_split(manifest, cfg.data.val_split):
        return manifest
    if b.kind != "sen12ms":
        return _segmentation_benchmark(b, out, manifest)
    if not storage.exists(storage.join(out, "synthetic.json")):
        log.info("generating the benchmark (%d tiles per domain, %d px) in %s", b.tiles, b.size, out)
        generate(out, tiles=b.tiles, size=b.size, seed=b.seed, preset=b.preset, scene_size=b.scene_size)
    prepare("synthetic", out, manifest)
    return manifest


def _segmentation_benchmark(b, out: str, manifest: str) -> str:
    """The generated segmentation benchmark (M3M-CR or WHU-OPT-SAR layout) and its manifest."""
    from raypipe.data.prepare import prepare
    from raypipe.synthetic.segmentation import METADATA_FILE, generate_segmentation

    if b.kind == "m3m-cr":
        sizes = {"tiles": b.tiles, "size": b.size, "scene_size": b.scene_size, "preset": b.preset}
    else:
        sizes = {"scenes": b.scenes, "scene_height": b.scene_height, "scene_width": b.scene_width, "tile_size": b.size}
    if not storage.exists(storage.join(out, METADATA_FILE)):
        log.info("generating the %s-layout segmentation benchmark %s in %s", b.kind, sizes, out)
        generate_segmentation(out, layout=b.kind, seed=b.seed, **sizes)  # WHU: clouds come from the pipeline
    if b.kind == "m3m-cr":  # its masks are the simulator's truth (raypipe.data.datasets.m3mcr)
        prepare("m3m-cr-generated", out, manifest)
    else:
        prepare(b.kind, out, manifest, tile_size=b.size)
    return manifest


def _has_split(manifest: str, split: str) -> bool:
    """False for a manifest written before val splits existed (it is then written again)."""
    return split in set(read_manifest(manifest)["split"])


@dataclass
class MethodData:
    """Manifests of both domains, read once; pipelines are made per (view, with SAR) and cached."""

    cfg: object
    frames: dict  # "source" / "target" -> manifest DataFrame
    classes: list[str]
    data_hash: str
    _pipes: dict = field(default_factory=dict)

    def pipe(self, view: View, sar: bool) -> TilePipeline:
        key = (view, sar)
        if key not in self._pipes:
            d = self.cfg.data
            data = to_dict(d.pipeline)
            data.update(manifest="", domain=d.source_domain if view.domain == "source" else d.target_domain,
                        split={"train": d.train_split, "val": d.val_split, "test": d.test_split}[view.split],
                        optical=view.optical, use_sar=sar)
            if not view.clouds:
                data["clouds"] = {"mode": "none"}
            elif view.simulate:
                data["clouds"] = {**data["clouds"], "mode": "simulate"}
            if view.split != "train":  # val and test are judged on the tiles as they are
                data["augment"] = {}
            self._pipes[key] = TilePipeline(from_dict(DataConfig, data, "data.pipeline"), frame=self.frames[view.domain])
        return self._pipes[key]

    @property
    def summary(self) -> str:
        d = self.cfg.data
        return d.source_manifest or f"the generated benchmark in {d.benchmark.out}"


def build_data(cfg) -> MethodData:
    d = cfg.data
    src_uri = d.source_manifest or ensure_benchmark(cfg)
    tgt_uri = d.target_manifest or src_uri
    src = read_manifest(src_uri)
    tgt = src if tgt_uri == src_uri else read_manifest(tgt_uri)
    classes = list(src.attrs["raypipe"].get("classes", []))
    tgt_classes = list(tgt.attrs["raypipe"].get("classes", []))
    if classes != tgt_classes:
        raise ConfigError("data.target_manifest", f"class list {tgt_classes} differs from the source's {classes}")
    return MethodData(cfg, {"source": src, "target": tgt}, classes,
                      content_hash(src) + ("" if tgt is src else content_hash(tgt)))
