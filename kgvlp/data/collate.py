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
    entity_ids/entity_negated/entity_uncertain: (E,) linked concepts (bank rows, -1 pad) and
                 their flags, or None (kgvlp.data.entities).
    entity_words: (E, M) long cleaned-word indices of each concept's mentions, -1 pad.
    """
    image: Tensor
    sentences: list[str]
    index: int
    labels: Tensor | None = None
    image_view2: Tensor | None = None
    entity_ids: Tensor | None = None
    entity_negated: Tensor | None = None
    entity_uncertain: Tensor | None = None
    entity_words: Tensor | None = None


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
        shapes = {tuple(s.image.shape) for s in samples}
        if len(shapes) > 1:
            detail = ", ".join(f"sample {s.index}: {tuple(s.image.shape)}" for s in samples)
            raise ValueError(f"images of one batch must share (C, H, W); got {detail}. The "
                             "dataset transform should resize/convert them (kgvlp.data.transforms)")
        text = tokenize_reports(self.tokenizer, [s.sentences for s in samples], self.max_length)
        labels = (torch.stack([s.labels for s in samples])
                  if samples[0].labels is not None else None)
        view2 = (torch.stack([s.image_view2 for s in samples])
                 if samples[0].image_view2 is not None else None)
        entities = self._entities(samples, text.word_index)
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
            **entities,
        )

    def _entities(self, samples: list[Sample], word_index: Tensor) -> dict[str, Tensor]:
        """Batch entity tensors (E fixed by the dataset); word masks over the W word slots."""
        if samples[0].entity_ids is None:
            return {}
        from kgvlp.data.entities import entity_word_mask
        ids = torch.stack([s.entity_ids for s in samples])
        words = torch.stack([s.entity_words for s in samples])
        word_mask = entity_word_mask(words, word_index, self.max_length - 2)
        # A concept whose mention words were all truncated away is not in the encoded text.
        truncated = (words >= 0).any(-1) & ~word_mask.any(-1)
        return {"entity_ids": torch.where(truncated, -1, ids),
                "entity_negated": torch.stack([s.entity_negated for s in samples]) & ~truncated,
                "entity_uncertain": torch.stack([s.entity_uncertain for s in samples]) & ~truncated,
                "entity_word_mask": word_mask}
