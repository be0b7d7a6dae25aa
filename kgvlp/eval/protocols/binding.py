"""Manifest IDs → rows of a kgvlp image cache, and the items a protocol task reads from them."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from kgvlp.eval.data import EvalDataError, EvalView
from kgvlp.eval.protocols import mgca
from kgvlp.eval.protocols.manifest import SplitManifest

# dataset name in a protocol → the reader (kgvlp.data.readers.READERS) that caches its images
READER = {"chexpert": "chexpert", "rsna": "rsna_pneumonia", "covidx": "covidx", "siim": "siim_acr",
          "object_cxr": "object_cxr", "chexpert_5x200": "chexpert"}


def cache_for(dataset: str, root: Path, cache_dir: str, size: int, progress: bool):
    """The kgvlp image cache of ``root`` (prepared on first use)."""
    from kgvlp.data.cache import ImageCache, is_cache
    if is_cache(root):
        return ImageCache(root)
    folder = Path(cache_dir) / f"protocol_{READER[dataset]}_{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]}"
    if not is_cache(folder):
        # its own process: ``prepare`` forks decoding workers, and a fork of a process that
        # already ran torch (a loaded model, its thread pools) can hang
        import subprocess
        import sys
        command = [sys.executable, "-m", "kgvlp.cli", "data", "prepare", READER[dataset], "--root", str(root),
                   "--out", str(folder), "--size", str(size)]
        done = subprocess.run(command, capture_output=not progress, text=True)
        if done.returncode != 0 or not is_cache(folder):
            raise EvalDataError(f"{dataset}: cannot cache the images of {root} (`{' '.join(command[1:])}` "
                                f"exited {done.returncode}): {(done.stderr or '').strip()[-500:]}")
    return ImageCache(folder)


def id_key(dataset: str, image_id: str) -> str:
    """CheXpert IDs are 'CheXpert-v1.0[-small]/train/…' in the CSVs, 'train/…' in PRIOR's list."""
    if dataset in ("chexpert", "chexpert_5x200"):
        parts = image_id.split("/")
        return "/".join(parts[1:]) if parts[0].lower().startswith("chexpert") else image_id
    return image_id


class ManifestRows(Dataset):
    """Items of a cache in a manifest's ID order, labels re-expressed in the protocol's classes.
    ``boxes_as_masks``: each instance's mask is its box filled (MGCA's RSNA segmentation,
    ``RSNASegmentDataset``: ``mask[y0:y1, x0:x1] = 1``)."""

    def __init__(self, cache, rows: list[int], image_size: int, relabel, label_names: list[str],
                 label_kind: str, with_masks: bool, boxes_as_masks: bool = False):
        from kgvlp.data.datasets import DownstreamDataset
        self.inner = DownstreamDataset(cache, rows, image_size, with_masks=with_masks)
        self.relabel, self.label_names, self.label_kind = relabel, label_names, label_kind
        self.boxes_as_masks = boxes_as_masks

    def __len__(self) -> int:
        return len(self.inner)

    def labels_matrix(self):
        import numpy as np
        return np.stack([self.relabel(self.inner.cache.meta[r]) for r in self.inner.rows])

    def __getitem__(self, index: int):
        item = self.inner[index]
        meta = self.inner.cache.meta[self.inner.rows[index]]
        item = dataclasses.replace(item, labels=torch.as_tensor(self.relabel(meta), dtype=torch.float32))
        return dataclasses.replace(item, masks=box_masks(item.boxes, item.image.shape[-1])) if self.boxes_as_masks else item


def box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(I, 4) xyxy pixel boxes → (I, size, size) bool masks of the filled boxes (NaN rows empty)."""
    masks = torch.zeros((len(boxes), size, size), dtype=torch.bool)
    for k, box in enumerate(boxes):
        if torch.isnan(box).any():
            continue
        x0, y0 = (max(0, int(v)) for v in box[:2].floor())
        x1, y1 = (min(size, int(v)) for v in box[2:].ceil())
        masks[k, y0:y1, x0:x1] = True
    return masks


def relabel_for(dataset: str, cache, extra: dict | None = None):
    """meta → the protocol's label vector for ``dataset``."""
    names = cache.label_names
    if dataset == "chexpert":
        index = {n: i for i, n in enumerate(names)}

        def chexpert(meta):
            values = meta.get("labels") or [None] * len(names)
            return [1.0 if values[index[t]] == 1 else (1.0 if values[index[t]] == -1 and t in mgca.U_ONES else 0.0)
                    for t in mgca.COMPETITION_TASKS]
        return chexpert
    if dataset == "covidx":
        def covidx(meta):
            values = meta.get("labels") or []
            present = [names[i] for i, v in enumerate(values) if v == 1]
            out = [0.0, 0.0, 0.0]
            if present:
                out[mgca.covidx_class(present[0])] = 1.0
            return out
        return covidx
    if dataset == "chexpert_5x200":
        labels = extra or {}
        return lambda meta: labels[id_key(dataset, meta["id"])]
    return lambda meta: [1.0 if v == 1 else 0.0 for v in (meta.get("labels") or [0.0] * len(names))]


@dataclass
class Bound:
    """A manifest bound to cache rows."""
    manifest: SplitManifest
    cache: object
    rows: dict[str, list[int]]
    missing: dict[str, int]
    position: dict[str, int]          # train ID → position in the train split's rows

    def view(self, split: str, image_size: int, relabel, label_kind: str, with_masks: bool = False,
             boxes_as_masks: bool = False) -> EvalView:
        return EvalView(ManifestRows(self.cache, self.rows[split], image_size, relabel,
                                     list(self.manifest.class_names), label_kind, with_masks, boxes_as_masks))

    def subset_positions(self, fraction: float, seed: int) -> tuple[list[int], int]:
        ids = self.manifest.subset(fraction, seed)
        found = [self.position[i] for i in ids if i in self.position]
        return found, len(ids) - len(found)


def bind(manifest: SplitManifest, cache) -> Bound:
    by_id = {id_key(manifest.dataset, str(m["id"])): i for i, m in enumerate(cache.meta)}
    rows, missing = {}, {}
    for split, ids in manifest.splits.items():
        keys = [id_key(manifest.dataset, i) for i in ids]
        rows[split] = [by_id[k] for k in keys if k in by_id]
        missing[split] = len(keys) - len(rows[split])
    train_ids = [i for i in manifest.splits.get("train", []) if id_key(manifest.dataset, i) in by_id]
    return Bound(manifest, cache, rows, missing, {i: k for k, i in enumerate(train_ids)})
