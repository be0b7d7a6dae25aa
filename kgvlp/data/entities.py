"""Linked UMLS concepts for pretraining samples (MLIP's knowledge inputs).

Each report gets its concepts once, when the dataset is built (never in the step):
- ``ground_truth``: SynthCXR's own mentions (finding CUI, negation, hedging, word indices);
- ``linker``: the knowledge linker's per-report cache (``knowledge.batch.LinkCache``);
  reports not yet in the cache are linked once and cached.
CUIs are mapped to rows of the knowledge bank (``ConceptIndex``: missing CUIs counted and
warned once). Mentions of one CUI in one report are merged into one entity: its words are
the union, it is negated only if every mention is, uncertain only if every affirmed
mention is.

Word indices always refer to the report's cleaned words (``split_sentences`` joined), the
same numbering as ``Batch.word_index``; sentence shuffling and truncation are followed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor

from kgvlp.data.text import _SENTENCE_END, _WORD, split_sentences

ENTITY_SOURCES = ("none", "ground_truth", "linker")


@dataclass
class ReportEntities:
    """The concepts of one report (one per CUI). words: cleaned-word indices of its mentions."""
    rows: list[int] = field(default_factory=list)
    negated: list[bool] = field(default_factory=list)
    uncertain: list[bool] = field(default_factory=list)
    words: list[list[int]] = field(default_factory=list)


def cleaned_word_map(text: str, min_words: int = 2) -> list[int]:
    """For each ``\\w+`` word of the raw ``text``: its index among the cleaned words that
    ``split_sentences(text)`` keeps, or -1 when its sentence is dropped (too short)."""
    out, kept = [], 0
    for raw in _SENTENCE_END.split(text):
        count = len(_WORD.findall(raw.lower()))
        if count >= min_words:
            out.extend(range(kept, kept + count))
            kept += count
        else:
            out.extend([-1] * count)
    return out


def merge_mentions(mentions: Iterable[tuple[str, bool, bool, list[int]]], index) -> ReportEntities:
    """(cui, negated, uncertain, words) mentions → one entity per CUI known to ``index``."""
    by_row: dict[int, dict] = {}
    for cui, negated, uncertain, words in mentions:
        row = index.lookup(cui)
        if row < 0:
            continue
        entry = by_row.setdefault(row, {"negated": [], "uncertain": [], "words": set()})
        entry["negated"].append(bool(negated))
        entry["uncertain"].append(bool(uncertain) and not negated)
        entry["words"].update(w for w in words if w >= 0)
    out = ReportEntities()
    for row, entry in sorted(by_row.items(), key=lambda kv: min(kv[1]["words"], default=1 << 30)):
        negated = all(entry["negated"])
        affirmed_uncertain = [u for u, n in zip(entry["uncertain"], entry["negated"]) if not n]
        out.rows.append(row)
        out.negated.append(negated)
        out.uncertain.append(bool(affirmed_uncertain) and all(affirmed_uncertain))
        out.words.append(sorted(entry["words"]))
    return out


def ground_truth_mentions(meta: dict) -> list[tuple[str, bool, bool, list[int]]]:
    """SynthCXR's mentions (word indices already count cleaned words of FINDINGS + IMPRESSION)."""
    return [(m["cui"], m.get("negated", False), m.get("uncertain", False), list(m.get("words", [])))
            for m in meta.get("mentions", []) if m.get("cui")]


def linker_mentions(text: str, mentions) -> list[tuple[str, bool, bool, list[int]]]:
    """knowledge.Mention objects of ``text`` → mentions over cleaned word indices."""
    word_map = cleaned_word_map(text)
    return [(m.cui, m.negated, m.uncertain, [word_map[w] for w in m.word_indices if w < len(word_map)])
            for m in mentions]


def build_report_entities(metas: list[dict], texts: list[str], source: str, index, graph_path=None,
                          link_cache=None, progress: bool = True) -> list[ReportEntities]:
    """Entities of every report (called once when the dataset is built)."""
    if source == "ground_truth":
        if metas and "mentions" not in metas[0]:
            raise ValueError("data.entities: ground_truth needs reports with stored mentions (SynthCXR); "
                             "use data.entities: linker for other datasets")
        found = [merge_mentions(ground_truth_mentions(meta), index) for meta in metas]
    elif source == "linker":
        from knowledge.linking import Linker
        linker = Linker(graph_path)
        linked = linker.link_many(texts, cache_dir=link_cache, progress=progress)
        found = [merge_mentions(linker_mentions(text, mentions), index) for text, mentions in zip(texts, linked)]
    else:
        raise ValueError(f"data.entities: {source!r}; choices: {', '.join(ENTITY_SOURCES)}")
    index.warn_missing()
    return found


def sentence_word_map(sentences: list[str], order: list[int]) -> list[int]:
    """Old cleaned-word index → index after reordering/truncating sentences to ``order``
    (a list of original sentence positions), -1 for words of dropped sentences."""
    counts = [len(s.split()) for s in sentences]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    out = [-1] * sum(counts)
    position = 0
    for s in order:
        for offset in range(counts[s]):
            out[starts[s] + offset] = position + offset
        position += counts[s]
    return out


def entity_tensors(entities: ReportEntities, word_map: list[int] | None, max_entities: int,
                   max_words: int) -> dict[str, Tensor]:
    """Fixed-size tensors for one Sample: ids/negated/uncertain (E,), words (E, M) (-1 pad).
    Entities whose mention words all fall in dropped sentences are dropped."""
    ids = torch.full((max_entities,), -1, dtype=torch.long)
    negated = torch.zeros(max_entities, dtype=torch.bool)
    uncertain = torch.zeros(max_entities, dtype=torch.bool)
    words = torch.full((max_entities, max_words), -1, dtype=torch.long)
    slot = 0
    for row, neg, unc, mention_words in zip(entities.rows, entities.negated, entities.uncertain, entities.words):
        if slot == max_entities:
            break
        if word_map is not None:
            mapped = [word_map[w] for w in mention_words if w < len(word_map) and word_map[w] >= 0]
            if mention_words and not mapped:
                continue
            mention_words = sorted(mapped)
        ids[slot], negated[slot], uncertain[slot] = row, neg, unc
        kept = mention_words[:max_words]
        words[slot, :len(kept)] = torch.tensor(kept, dtype=torch.long)
        slot += 1
    return {"entity_ids": ids, "entity_negated": negated, "entity_uncertain": uncertain,
            "entity_words": words}


def entity_word_mask(entity_words: Tensor, word_index: Tensor, word_slots: int) -> Tensor:
    """(B, E, M) word indices + the batch's (B, L) word_index → (B, E, W) bool, only words
    that the tokenizer kept (truncation drops the rest)."""
    batch, entities, _ = entity_words.shape
    slot = torch.where(entity_words >= 0, entity_words, word_slots).clamp(max=word_slots)
    mask = torch.zeros(batch, entities, word_slots + 1, dtype=torch.bool)
    mask.scatter_(2, slot, True)
    mask = mask[..., :word_slots]
    encoded_words = (word_index.max(dim=1).values + 1).clamp(min=0)          # (B,)
    return mask & (torch.arange(word_slots)[None, None, :] < encoded_words[:, None, None])


def split_report_words(text: str) -> list[str]:
    """The cleaned words of a report, in ``Batch.word_index`` numbering (for debugging)."""
    return " ".join(split_sentences(text)).split()
