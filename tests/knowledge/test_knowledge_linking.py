"""Linking: mentions, negation/uncertainty, word indices, cache, real IU reports."""
import csv
import itertools
import re
from pathlib import Path

import pytest

from knowledge import context
from knowledge.reports import iu_reports_path, read_reports

GOLD = Path(__file__).parent / "data" / "context_gold.tsv"


def test_no_effusion_or_pneumothorax_yields_two_negated_concepts(linker):
    mentions = linker.link("No pleural effusion or pneumothorax.")

    assert [(m.cui, m.negated) for m in mentions] == [("C2073625", True), ("C2073565", True)]


def test_hedged_finding_is_uncertain_not_negated(linker):
    [mention] = linker.link("Left basilar opacity may represent atelectasis.")[-1:]

    assert mention.text == "atelectasis" and mention.uncertain and not mention.negated


def test_plurals_and_abbreviations_link(linker):
    text = "Bilateral pleural effusions. Chronic obstructive pulmonary disease (COPD). COPD is stable."

    cuis = [m.cui for m in linker.link(text)]

    assert cuis.count("C2073625") == 1 and cuis.count("C0024117") == 3


def test_offsets_sentence_and_word_indices(linker):
    text = "Heart size normal. Small right pleural effusion."

    mention = next(m for m in linker.link(text) if m.cui == "C2073625")

    words = re.findall(r"\w+", text.lower())
    assert text[mention.start:mention.end] == "pleural effusion"
    assert mention.sentence_index == 1
    assert [words[i] for i in mention.word_indices] == ["pleural", "effusion"]


def test_link_many_caches_by_report_content(linker, tmp_path):
    texts = ["No pneumothorax.", "Mild cardiomegaly.", "No pneumothorax."]

    first = linker.link_many(texts, cache_dir=tmp_path, progress=False)
    linker_link, linker.link = linker.link, None  # a cache hit must not link again
    try:
        second = linker.link_many(texts, cache_dir=tmp_path, progress=False)
    finally:
        linker.link = linker_link

    assert first == second and first[0] == first[2]


def test_real_iu_reports_mostly_have_concepts(linker):
    reports = [t for _, t in itertools.islice(read_reports(iu_reports_path()), 200) if t]

    results = linker.link_many(reports, processes=2, progress=False)

    assert sum(1 for r in results if r) / len(results) > 0.9


def test_context_rules_on_hand_labelled_iu_sentences():
    with open(GOLD, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    predicted = [context.assess_text(r["sentence"], r["mention"]) for r in rows]

    neg_acc = sum(p[0] == (r["negated"] == "1") for p, r in zip(predicted, rows)) / len(rows)
    unc_acc = sum(p[1] == (r["uncertain"] == "1") for p, r in zip(predicted, rows)) / len(rows)

    assert neg_acc >= 0.9 and unc_acc >= 0.9, (neg_acc, unc_acc)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_reads_csv_and_jsonl_corpora(tmp_path, suffix):
    path = tmp_path / f"r.{suffix}"
    path.write_text("id,report\na,No effusion.\n" if suffix == "csv" else '{"id": "a", "text": "No effusion."}\n')

    assert list(read_reports(path)) == [("a", "No effusion.")]
