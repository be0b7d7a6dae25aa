"""MGCA's official word slots (provides ``Need.MGCA_WORDS``; CTA reads them under
``official_quirks``).

kgvlp's own words (``Features.word_tokens``, W = L − 2 slots) give each word the [CLS]
attention of its own pieces. The official merge (HKU-MedAI/MGCA @680fe4a,
``mgca/models/backbones/encoder.py:307-376`` and ``:382-397``) differs in three ways, which
this layout reproduces from the same token states, attention and ``Batch.word_index``:

- **shift**: it zips ``attn[:, 0, 1:]`` (attention to tokens 1…L−1) with the tokens from
  [CLS] on, so the token at position t carries the attention to position t + 1; a word's
  weight is the attention to the tokens one place to its right;
- **[SEP] is a word**: there are L − 1 slots (the merged [CLS] is dropped), and [SEP] takes
  the slot after the last word, with its own state and the attention to the token after it
  (a pad token: weight 0, so it is never an anchor, but it is a negative and a key);
- **a full report drops its last word**: the loop stops at token L − 2 (the zip is one
  short), before a [SEP] at L − 1, and the last word's pieces are never flushed.

Its word boundaries come from ``word_index`` (the tokenizer's word ids), the official
code's from '##' prefixes; on kgvlp's cleaned text (``\\w+`` words) the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from kgvlp.models.features import Features, Need
from kgvlp.models.text import merge_words
from kgvlp.modules.service import Service, ServiceConfig


@dataclass
class WordSlots:
    """tokens (B, L−1, D) summed piece states; weights (B, L−1) shifted [CLS] attention;
    mask (B, L−1) bool, True on words and on [SEP] (the official ``!= "[PAD]"``)."""
    batch_independent: ClassVar[frozenset[str]] = frozenset()   # every field is one row per sample
    tokens: Tensor
    weights: Tensor
    mask: Tensor


def official_word_index(word_index: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, L) slot of each token in the official layout, −1 where a token joins no slot."""
    length = word_index.shape[1]
    positions = torch.arange(length, device=word_index.device)[None]
    sep = attention_mask.long().sum(1, keepdim=True) - 1            # [SEP] is the last real token
    sep_visited = sep < length - 1                                   # the loop stops before L − 1
    words = word_index.max(dim=1, keepdim=True).values + 1           # words of the report
    dropped = ~sep_visited & (word_index == words - 1)               # never flushed
    index = torch.where(dropped, -1, word_index)
    return torch.where(sep_visited & (positions == sep), words, index)


def mgca_word_slots(tokens: Tensor, cls_attention: Tensor, word_index: Tensor,
                    attention_mask: Tensor) -> WordSlots:
    slots = word_index.shape[1] - 1
    index = official_word_index(word_index, attention_mask)
    present = (index >= 0).to(tokens.dtype)
    return WordSlots(tokens=merge_words(tokens, index, slots),
                     # token t's slot gets the attention to t + 1 (the shift)
                     weights=merge_words(cls_attention[:, 1:], index[:, :-1], slots),
                     mask=merge_words(present, index, slots) > 0)


@dataclass
class MGCAWordsConfig(ServiceConfig):
    """No options: the layout is the official code's."""


class MGCAWords(Service):
    """Stateless: the official layout of this batch's words, computed once per step."""
    Config = MGCAWordsConfig
    provides = Need.MGCA_WORDS
    requires = frozenset({Need.TEXT_TOKENS})

    def provide(self, model, batch, features: Features) -> WordSlots:
        return mgca_word_slots(features.text_tokens, features.cls_attention, batch.word_index,
                               batch.attention_mask)
