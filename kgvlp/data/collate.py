"""Samples → typed Batch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgvlp.data.batch import Batch
from kgvlp.data.text import tokenize_reports


@dataclass
class Sample:
    """One image–report pair as a dataset returns it.

    image:     (C, H, W) float, already transformed/normalised.
    sentences: cleaned report sentences (see kgvlp.data.text.split_sentences).
    index:     row in the dataset.
    labels:    (K,) float multi-hot, or None.
    image_view2: (C, H, W) a second augmented view, or None.
    """
    image: Tensor
    sentences: list[str]
    index: int
    labels: Tensor | None = None
    image_view2: Tensor | None = None


class Collator:
    """Stacks samples and tokenises their reports (runs in loader workers, not in the step)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: list[Sample | None]) -> Batch:
        # Datasets return None for a sample they could not read (corrupt image, empty
        # report); it is dropped here and counted in ``Batch.skipped`` so nothing crashes
        # mid-epoch and the trainer can report how many were lost.
        skipped = sum(s is None for s in samples)
        samples = [s for s in samples if s is not None]
        if not samples:
            raise RuntimeError(f"every sample of a batch of {skipped} was unreadable; "
                               "check the dataset's skip report")
        text = tokenize_reports(self.tokenizer, [s.sentences for s in samples], self.max_length)
        labels = (torch.stack([s.labels for s in samples])
                  if samples[0].labels is not None else None)
        view2 = (torch.stack([s.image_view2 for s in samples])
                 if samples[0].image_view2 is not None else None)
        return Batch(
            images=torch.stack([s.image for s in samples]),
            input_ids=text.input_ids,
            attention_mask=text.attention_mask,
            word_index=text.word_index,
            sentence_index=text.sentence_index,
            sample_index=torch.tensor([s.index for s in samples], dtype=torch.long),
            labels=labels,
            images_view2=view2,
            skipped=skipped,
        )
