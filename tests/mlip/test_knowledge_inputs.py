"""Knowledge inputs: the bank loads once and refuses another graph's embeddings, missing
CUIs are counted and warned about once, SynthCXR's mentions become word masks that point
at the mention's words (also after sentence shuffling and truncation)."""
from __future__ import annotations

import warnings

import pytest
import torch

from mlip.helpers import CONCEPTS, bank_config, write_bank
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.datasets import report_text
from kgvlp.data.entities import (build_report_entities, cleaned_word_map, entity_tensors, merge_mentions,
                                 sentence_word_map)
from kgvlp.data.synth.generate import make_study
from kgvlp.data.text import split_sentences
from kgvlp.modules.knowledge_bank import KnowledgeBank
from knowledge.bank_files import ConceptIndex, read_bank_meta


class FakeModel:
    class dims:
        text_width = 32


def test_a_bank_built_for_another_graph_fails_naming_both(tmp_path):
    graph, _ = write_bank(tmp_path / "a", graph_edges=((0, 1),))
    _, other_embeddings = write_bank(tmp_path / "b", graph_edges=((2, 3),))
    config = bank_config(tmp_path / "a")
    config.embeddings = str(other_embeddings)

    with pytest.raises(ValueError) as error:
        KnowledgeBank(config, FakeModel())

    message = str(error.value)
    assert str(other_embeddings) in message and str(graph) in message
    assert read_bank_meta(other_embeddings)["graph_fingerprint"] in message


def test_the_bank_clusters_category_concepts_only(bank_dir):
    bank = KnowledgeBank(bank_config(bank_dir, num_categories=3), FakeModel())

    anatomy = [i for i, (_, _, tui) in enumerate(CONCEPTS) if tui == "T023"]
    assert bank.concept_category[anatomy].tolist() == [-1, -1]
    assert set(bank.concept_category.tolist()) - {-1} == {0, 1, 2}
    assert bank.centroids.shape == (3, 24) and bank.projection.out_features == 32


def test_missing_cuis_are_counted_and_warned_about_once():
    index = ConceptIndex(["C1", "C2"], source="bank X")
    mentions = [[("C1", False, False, [0]), ("C9", False, False, [1])], [("C9", True, False, [0])]]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = build_report_entities([{"mentions": [{"cui": c, "negated": n, "uncertain": u, "words": w}
                                                     for c, n, u, w in m]} for m in mentions],
                                      ["", ""], "ground_truth", index)
        index.warn_missing()

    assert index.missing == {"C9": 2}
    assert len(caught) == 1 and "2 concept mentions" in str(caught[0].message) and "C9" in str(caught[0].message)
    assert [e.rows for e in found] == [[0], []]


def test_mentions_of_one_concept_merge_into_one_entity():
    index = ConceptIndex(["C1"])
    merged = merge_mentions([("C1", True, False, [5]), ("C1", False, True, [1, 2])], index)

    assert merged.rows == [0] and merged.negated == [False] and merged.uncertain == [True]
    assert merged.words == [[1, 2, 5]]


def test_synthcxr_mentions_mark_their_words(tokenizer):
    _, _, meta = make_study(3, 0, 64)
    sentences = split_sentences(report_text(meta))
    words = " ".join(sentences).split()
    cuis = sorted({m["cui"] for m in meta["mentions"]})
    index = ConceptIndex(cuis)
    [entities] = build_report_entities([meta], [report_text(meta)], "ground_truth", index)
    sample = Sample(image=torch.zeros(1, 8, 8), sentences=sentences, index=0,
                    **entity_tensors(entities, None, max_entities=8, max_words=8))

    batch = Collator(tokenizer, 112)([sample])

    for slot, row in enumerate(batch.entity_ids[0].tolist()):
        if row < 0:
            continue
        marked = [words[w] for w in batch.entity_word_mask[0, slot].nonzero()[:, 0].tolist()]
        expected = [words[w] for m in meta["mentions"] if m["cui"] == cuis[row] for w in m["words"]]
        assert sorted(marked) == sorted(expected)


def test_truncation_drops_concepts_whose_words_were_cut(tokenizer):
    sentences = ["heart size is normal", "there is a small left pleural effusion"]
    index = ConceptIndex(["HEART", "EFFUSION"])
    entities = merge_mentions([("HEART", False, False, [0]), ("EFFUSION", False, False, [8, 9])], index)
    sample = Sample(image=torch.zeros(1, 8, 8), sentences=sentences, index=0,
                    **entity_tensors(entities, None, max_entities=4, max_words=4))

    batch = Collator(tokenizer, 8)([sample])      # 6 word-piece slots: the effusion is cut

    assert batch.entity_ids[0].tolist() == [0, -1, -1, -1]


def test_word_indices_follow_shuffled_and_dropped_sentences():
    sentences = ["a b", "c d e", "f g"]

    assert sentence_word_map(sentences, [2, 0]) == [2, 3, -1, -1, -1, 0, 1]


def test_linker_word_indices_skip_dropped_short_sentences():
    text = "Heart normal. Ok. No pleural effusion."

    assert cleaned_word_map(text) == [0, 1, -1, 2, 3, 4]
