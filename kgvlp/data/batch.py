"""The typed batch that flows from the data loader into ``VLPModel``.

Shapes use B = batch size, C = image channels (1 for radiographs), H×W = image size,
L = text tokens, E = linked concepts per report (padded), S = sentences per report.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    """One batch of image–report pairs.

    images:          (B, C, H, W) float, normalised (MGCA: mean = std = 0.5).
    input_ids:       (B, L) long token ids, [CLS] first.
    attention_mask:  (B, L) long, 1 on real tokens (including [CLS]/[SEP]), 0 on padding.
    word_index:      (B, L) long, the word each token belongs to (0-based, counted from the
                     first real word); -1 on [CLS], [SEP] and padding. Sub-word pieces of one
                     word share an index, so words are merged with one scatter-add.
    sentence_index:  (B, L) long, the sentence each token belongs to (0-based); -1 on
                     special tokens and padding.
    sample_index:    (B,) long, row of each sample in its dataset (data position, debugging).
    labels:          (B, K) float multi-hot finding labels, or None.
    images_view2:    (B, C, H, W) second augmented view (divergence encoders), or None.
    entity_ids:      (B, E) long rows of linked UMLS concepts in the knowledge bank, -1 = pad.
    entity_negated:  (B, E) bool, the mention was negated ("no pleural effusion").
    entity_uncertain:(B, E) bool, the mention was hedged ("may represent atelectasis").
    entity_word_mask:(B, E, W) bool, which words (word_index slots) mention each concept.
    skipped:         samples dropped from this batch because they could not be read.
    """

    images: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    word_index: Tensor
    sentence_index: Tensor
    sample_index: Tensor
    labels: Tensor | None = None
    images_view2: Tensor | None = None
    entity_ids: Tensor | None = None
    entity_negated: Tensor | None = None
    entity_uncertain: Tensor | None = None
    entity_word_mask: Tensor | None = None
    skipped: int = 0

    @property
    def size(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, image_dtype: torch.dtype | None = None) -> "Batch":
        """Move every tensor to ``device``; images (and view 2) optionally cast to ``image_dtype``."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                value = value.to(device, non_blocking=True)
                if image_dtype is not None and field.name in ("images", "images_view2"):
                    value = value.to(image_dtype)
            moved[field.name] = value
        return replace(self, **moved)

    def pin_memory(self) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def select(self, rows: Tensor | slice) -> "Batch":
        """The sub-batch of the given rows (used to split a batch across ranks in tests)."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    @staticmethod
    def concatenate(batches: list["Batch"]) -> "Batch":
        """Stack batches along B; text tensors must share L."""
        first = batches[0]
        joined = {}
        for field in fields(first):
            values = [getattr(b, field.name) for b in batches]
            if field.name == "skipped":
                joined[field.name] = sum(values)
            else:
                joined[field.name] = None if values[0] is None else torch.cat(values, dim=0)
        return Batch(**joined)
