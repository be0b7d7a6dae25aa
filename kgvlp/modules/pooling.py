"""Sentence pooling shared by the text encoder, the sentence bank and the objectives."""
from __future__ import annotations

import torch
from torch import Tensor


def sentence_means(tokens: Tensor, sentence_index: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """Mean token state per sentence (PRIOR's sentence features): (B, L, D) tokens and (B, L)
    sentence index (-1 off-sentence) → (B, S, D) means and (B, S) bool mask of real sentences.
    One scatter-add for the whole batch; sentences past ``slots`` are dropped."""
    batch, _, width = tokens.shape
    slot = torch.where((sentence_index >= 0) & (sentence_index < slots), sentence_index, slots)
    sums = tokens.new_zeros(batch, slots + 1, width)
    sums.scatter_add_(1, slot[..., None].expand(-1, -1, width), tokens)
    counts = tokens.new_zeros(batch, slots + 1)
    counts.scatter_add_(1, slot, torch.ones_like(slot, dtype=tokens.dtype))
    counts = counts[:, :slots]
    return sums[:, :slots] / counts.clamp(min=1)[..., None], counts > 0


def masked_mean(sentences: Tensor, mask: Tensor) -> Tensor:
    """(B, S, D), (B, S) bool → (B, D): the mean over each report's real sentences."""
    weights = mask.to(sentences.dtype)[..., None]
    return (sentences * weights).sum(1) / weights.sum(1).clamp(min=1)
