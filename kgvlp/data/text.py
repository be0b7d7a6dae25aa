"""Report text → token ids with word and sentence indices, for any fast BERT tokenizer.

MGCA merges sub-word pieces into words in Python per token at training time; here the
merge is planned once in the loader: every token carries the index of its word and its
sentence, so the model merges pieces with one scatter-add on the device.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD = re.compile(r"\w+")


def split_sentences(report: str, min_words: int = 2) -> list[str]:
    """Sentences of a report, each cleaned to lower-case ``\\w+`` words joined by spaces.

    MGCA drops sentences of one word or less (``min_words=2``); empty results mean the
    report has no usable text and the sample should be skipped.
    """
    sentences = []
    for raw in _SENTENCE_END.split(report):
        words = _WORD.findall(raw.lower())
        if len(words) >= min_words:
            sentences.append(" ".join(words))
    return sentences


@dataclass
class TokenizedReports:
    """input_ids/attention_mask/word_index/sentence_index: (B, L) long; see Batch."""
    input_ids: Tensor
    attention_mask: Tensor
    word_index: Tensor
    sentence_index: Tensor


def tokenize_reports(tokenizer, reports: list[list[str]], max_length: int) -> TokenizedReports:
    """Tokenise reports given as lists of cleaned sentences into padded (B, max_length) tensors.

    Layout per report: [CLS] sentence tokens … [SEP] [PAD] …; truncation keeps [SEP] last.
    Padding to ``max_length`` (not to the longest report) keeps shapes static for
    torch.compile and makes results independent of who else is in the batch.
    """
    flat = [s for sentences in reports for s in sentences]
    encoded = tokenizer(flat, add_special_tokens=False) if flat else None
    batch = len(reports)
    input_ids = torch.full((batch, max_length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, max_length), dtype=torch.long)
    word_index = torch.full((batch, max_length), -1, dtype=torch.long)
    sentence_index = torch.full((batch, max_length), -1, dtype=torch.long)
    budget = max_length - 2
    cursor = 0
    for row, sentences in enumerate(reports):
        ids: list[int] = []
        words: list[int] = []
        sents: list[int] = []
        words_before = 0
        for s_idx in range(len(sentences)):
            piece_ids = encoded["input_ids"][cursor + s_idx]
            piece_words = encoded.word_ids(cursor + s_idx)
            ids.extend(piece_ids)
            words.extend(words_before + w for w in piece_words)
            sents.extend([s_idx] * len(piece_ids))
            words_before += (max(piece_words) + 1) if piece_words else 0
        cursor += len(sentences)
        ids, words, sents = ids[:budget], words[:budget], sents[:budget]
        n = len(ids)
        input_ids[row, 0] = tokenizer.cls_token_id
        input_ids[row, 1:n + 1] = torch.tensor(ids, dtype=torch.long)
        input_ids[row, n + 1] = tokenizer.sep_token_id
        attention_mask[row, : n + 2] = 1
        word_index[row, 1:n + 1] = torch.tensor(words, dtype=torch.long)
        sentence_index[row, 1:n + 1] = torch.tensor(sents, dtype=torch.long)
    return TokenizedReports(input_ids, attention_mask, word_index, sentence_index)
