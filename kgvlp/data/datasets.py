"""Datasets over an image cache: pretraining pairs and downstream evaluation items."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from kgvlp.config.schema import DataConfig
from kgvlp.data.cache import ImageCache, is_cache
from kgvlp.data.collate import Sample
from kgvlp.data.text import split_sentences
from kgvlp.data.transforms import ImageTransform, resize_pad


def report_text(meta: dict) -> str:
    """The text a model reads: FINDINGS + IMPRESSION (MGCA), else the whole report."""
    parts = [meta.get("findings") or "", meta.get("impression") or ""]
    text = "\n".join(p for p in parts if p)
    return text or meta.get("report") or ""


def binary_labels(values, uncertain: float = 0.0) -> Tensor:
    """Stored labels (1 positive, 0 negative, -1 uncertain, None unknown) → float multi-hot."""
    out = [1.0 if v == 1 else (uncertain if v == -1 else 0.0) for v in values]
    return torch.tensor(out, dtype=torch.float32)


def resolve_root(cfg: DataConfig, progress: bool = True) -> Path:
    """The cache folder a DataConfig points at, generating SynthCXR when needed."""
    if cfg.root is not None:
        return Path(cfg.root)
    if cfg.dataset == "synthcxr":
        from kgvlp.data.synth.generate import ensure_synthcxr
        return ensure_synthcxr(cfg.cache_dir, cfg.synth_n, cfg.synth_seed, cfg.synth_image_size,
                               progress=progress, knobs=cfg.synth)
    candidate = Path(cfg.cache_dir) / cfg.dataset
    if is_cache(candidate):
        return candidate
    raise FileNotFoundError(
        f"data.root is not set and {candidate} holds no prepared cache for {cfg.dataset!r}: run "
        f"`kgvlp data prepare {cfg.dataset} --root <download folder> --out {candidate}` first")


def split_rows(cache: ImageCache, split: str) -> list[int]:
    """Rows of ``split``; "pretrain" falls back to "train" for real datasets, "val" to "valid"."""
    aliases = {"pretrain": ["pretrain", "train"], "val": ["val", "valid", "validate"],
               "test": ["test"], "train": ["train"]}.get(split, [split])
    for name in aliases:
        rows = cache.rows(name)
        if rows:
            return rows
    available = sorted({m.get("split") for m in cache.meta})
    raise ValueError(f"{cache.folder} has no rows in split {split!r}; splits there: {available}")


class PretrainDataset(Dataset):
    """Image–report pairs as ``Sample``; ``None`` for a sample that cannot be read."""

    def __init__(self, cache: ImageCache, rows: list[int], cfg: DataConfig, train: bool):
        self.cache, self.rows, self.cfg, self.train = cache, rows, cfg, train
        self.transform = ImageTransform(cfg.resize, cfg.image_size, train, cfg.augment)
        self.label_names = cache.label_names
        self.entities = None          # list[ReportEntities] aligned with rows (attach_entities)

    def attach_entities(self, progress: bool = True) -> None:
        """Link every report to knowledge-bank rows once (cfg.entities; kgvlp.data.entities)."""
        from kgvlp.data.entities import build_report_entities
        from knowledge.bank_files import ConceptIndex, knowledge_paths
        graph, embeddings = knowledge_paths(self.cfg.knowledge_graph, self.cfg.knowledge_embeddings,
                                            self.cfg.cache_dir)
        metas = [self.cache.meta[r] for r in self.rows]
        self.entities = build_report_entities(metas, [report_text(m) for m in metas], self.cfg.entities,
                                              ConceptIndex.from_embeddings(embeddings), graph,
                                              self.cfg.link_cache, progress)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample | None:
        meta = self.cache.meta[self.rows[index]]
        sentences = split_sentences(report_text(meta))
        if not sentences:
            return None
        original, order = sentences, list(range(len(sentences)))
        if self.cfg.shuffle_sentences and self.train:
            order = torch.randperm(len(sentences)).tolist()
            sentences = [sentences[i] for i in order]
        if self.cfg.max_sentences is not None:
            sentences = sentences[: self.cfg.max_sentences]
            order = order[: self.cfg.max_sentences]
        try:
            image = self.cache.image(self.rows[index])
        except (OSError, ValueError):
            return None
        labels = binary_labels(meta["labels"]) if meta.get("labels") is not None else None
        view2 = self.transform(image) if self.cfg.second_view else None
        entities = {}
        if self.entities is not None:
            from kgvlp.data.entities import entity_tensors, sentence_word_map
            moved = order != list(range(len(original)))
            entities = entity_tensors(self.entities[index], sentence_word_map(original, order) if moved else None,
                                      self.cfg.max_entities, self.cfg.max_mention_words)
        return Sample(image=self.transform(image), sentences=sentences, index=index,
                      labels=labels, image_view2=view2, **entities)


def build_pretrain_dataset(cfg: DataConfig, *, train: bool = True) -> PretrainDataset:
    """The pretraining dataset of ``cfg`` (items: ``kgvlp.data.collate.Sample`` or None).

    ``cfg.root`` is a prepared cache; with ``dataset: synthcxr`` and no root, SynthCXR is
    generated once into ``cfg.cache_dir`` (safe with several ranks) and read from there.
    """
    cache = ImageCache(resolve_root(cfg, progress=int(os.environ.get("RANK", "0")) == 0))
    rows = split_rows(cache, cfg.split)
    if cfg.max_samples is not None:
        rows = rows[: cfg.max_samples]
    dataset = PretrainDataset(cache, rows, cfg, train)
    if cfg.entities != "none":
        dataset.attach_entities(progress=int(os.environ.get("RANK", "0")) == 0)
    return dataset


@dataclass
class DownstreamItem:
    """One evaluation sample.

    image:          (1, S, S) float, normalised (mean = std = 0.5), whole image resized to S.
    labels:         (K,) float multi-hot over ``dataset.label_names``.
    index:          position in the dataset.
    masks:          (I, S, S) bool, one per finding instance (I may be 0); SynthCXR, SIIM.
    boxes:          (I, 4) float [x0, y0, x1, y1] in pixels of ``image``; NaN rows where an
                    instance has no box.
    instance_labels:(I,) long, label index of each instance.
    finding_names:  the finding (label name) of each instance.
    instance_cuis:  UMLS CUI of each instance (None where unknown).
    report:         full report text ("FINDINGS: … IMPRESSION: …"), "" when none.
    sentences:      cleaned sentences of FINDINGS + IMPRESSION (split_sentences).
    mentions:       [{"finding", "cui", "words", "negated", "uncertain", "instances"}];
                    "words" index the words of ``" ".join(sentences).split()``.
    """
    image: Tensor
    labels: Tensor
    index: int
    masks: Tensor
    boxes: Tensor
    instance_labels: Tensor
    finding_names: list[str] = field(default_factory=list)
    instance_cuis: list = field(default_factory=list)
    report: str = ""
    sentences: list[str] = field(default_factory=list)
    mentions: list[dict] = field(default_factory=list)


def collate_downstream(items: list[DownstreamItem]) -> dict:
    """Stack images/labels; keep per-instance fields as lists (variable I)."""
    return {"images": torch.stack([i.image for i in items]),
            "labels": torch.stack([i.labels for i in items]),
            "index": torch.tensor([i.index for i in items]),
            "masks": [i.masks for i in items], "boxes": [i.boxes for i in items],
            "instance_labels": [i.instance_labels for i in items],
            "reports": [i.report for i in items], "sentences": [i.sentences for i in items],
            "mentions": [i.mentions for i in items]}


class DownstreamDataset(Dataset):
    """Evaluation items from a cache split; ``label_names`` and ``label_cuis`` describe labels."""

    def __init__(self, cache: ImageCache, rows: list[int], image_size: int, with_masks: bool = True,
                 uncertain: float | list[float] = 0.0):
        self.cache, self.rows, self.image_size, self.with_masks = cache, rows, image_size, with_masks
        self.label_names: list[str] = cache.label_names
        self.label_cuis: list[str | None] = list(cache.info.get("label_cuis") or [None] * len(self.label_names))
        self.uncertain = uncertain
        self._label_index = {n: i for i, n in enumerate(self.label_names)}

    def __len__(self) -> int:
        return len(self.rows)

    def labels_matrix(self) -> np.ndarray:
        """(N, K) float labels of every item, without reading images (for sampling, probes)."""
        return np.stack([self._labels(self.cache.meta[r]).numpy() for r in self.rows]) \
            if self.rows else np.zeros((0, len(self.label_names)), np.float32)

    def _labels(self, meta) -> Tensor:
        values = meta.get("labels") or [0.0] * len(self.label_names)
        if isinstance(self.uncertain, (list, tuple)):  # per-label policy (CheXpert U-ones/U-zeros)
            return torch.tensor([1.0 if v == 1 else (u if v == -1 else 0.0)
                                 for v, u in zip(values, self.uncertain)], dtype=torch.float32)
        return binary_labels(values, self.uncertain)

    def __getitem__(self, index: int) -> DownstreamItem:
        row = self.rows[index]
        meta = self.cache.meta[row]
        image = torch.from_numpy(self.cache.image(row)).float().div_(255.0)[None]
        source = image.shape[-1]
        image = resize_pad(image, self.image_size)
        scale = self.image_size / source
        instances = meta.get("instances", [])
        masks = torch.zeros((len(instances), self.image_size, self.image_size), dtype=torch.bool)
        boxes = torch.full((len(instances), 4), float("nan"))
        for k, inst in enumerate(instances):
            if inst.get("box") is not None:
                boxes[k] = torch.tensor(inst["box"], dtype=torch.float32) * scale
            if self.with_masks and inst.get("mask") is not None:
                mask = torch.from_numpy(self.cache.mask(inst["mask"])).float()[None]
                masks[k] = resize_pad(mask, self.image_size)[0] > 0.5
        sentences = split_sentences(report_text(meta))
        return DownstreamItem(
            image=(image - 0.5) / 0.5, labels=self._labels(meta), index=index, masks=masks, boxes=boxes,
            instance_labels=torch.tensor([self._label_index.get(i["finding"], -1) for i in instances],
                                         dtype=torch.long),
            finding_names=[i["finding"] for i in instances], instance_cuis=[i.get("cui") for i in instances],
            report=meta.get("report") or report_text(meta), sentences=sentences,
            mentions=meta.get("mentions", []))


def label_fraction(labels: np.ndarray, fraction: float, seed: int) -> list[int]:
    """Positions of a ``fraction`` subset, nested across fractions for one seed.

    Every label with a positive in the full set gets at least one positive first (in the
    seed's order), so a 1% subset can still train a probe for every label.
    """
    n = len(labels)
    if fraction >= 1.0:
        return list(range(n))
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(fraction * n)))
    chosen: list[int] = []
    for j in range(labels.shape[1]):
        if len(chosen) >= k:
            break
        if not any(labels[i, j] == 1 for i in chosen):
            pos = next((int(i) for i in order if labels[i, j] == 1 and int(i) not in chosen), None)
            if pos is not None:
                chosen.append(pos)
    for i in order:
        if len(chosen) >= k:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return sorted(chosen)


def build_downstream_dataset(name_or_root: str | os.PathLike | DataConfig, split: str,
                             fraction: float = 1.0, seed: int = 0, image_size: int = 224, *,
                             cache_dir: str = ".kgvlp_cache", synth_n: int = 2000, synth_seed: int = 0,
                             synth_image_size: int = 256, synth=None, with_masks: bool = True,
                             uncertain: float | list[float] = 0.0) -> DownstreamDataset:
    """An evaluation split (train/val/test) of SynthCXR or a prepared cache.

    ``name_or_root``: "synthcxr" (generated into ``cache_dir`` with the synth_* settings and
    ``synth``, a SynthConfig of difficulty knobs or a mapping of them; None = defaults),
    a cache folder, or a DataConfig. ``fraction`` < 1 keeps a seeded, nested subset of the
    split (1%, 10%, 100% label fractions). ``uncertain``: value for -1 labels (one for all,
    or one per label: CheXpert's U-ones/U-zeros).
    """
    if isinstance(name_or_root, DataConfig):
        root = resolve_root(name_or_root)
    elif str(name_or_root) == "synthcxr":
        from kgvlp.data.synth.generate import ensure_synthcxr
        from kgvlp.config.schema import SynthConfig
        knobs = SynthConfig(**synth) if isinstance(synth, dict) else synth
        root = ensure_synthcxr(cache_dir, synth_n, synth_seed, synth_image_size, knobs=knobs)
    else:
        root = Path(name_or_root)
    cache = ImageCache(root)
    rows = split_rows(cache, split)
    dataset = DownstreamDataset(cache, rows, image_size, with_masks, uncertain)
    if fraction < 1.0:
        keep = label_fraction(dataset.labels_matrix(), fraction, seed)
        dataset.rows = [rows[i] for i in keep]
    return dataset
