"""Sample the blind evaluation sentences from the IU reports shipped in torchxrayvision.

Deterministic (seed below): ``python knowledge/data/blind_set/sample.py`` rewrites
``sentences.tsv`` next to this file.  Labels are NOT produced here: ``labels.tsv`` was written
by a person reading each sentence (see README.md).  The word stems below only steer *which*
sentences are drawn, so that every finding gets positives; they never decide a label.

Rule: (A) 300 sentences drawn uniformly from all FINDINGS and IMPRESSION sentences of the
3,955 reports; (B) then, finding by finding in FINDINGS order, sentences that contain one of
the finding's stems and none of the negation cues are drawn (distinct texts, seeded order)
until the set holds ``MIN_STEM_HITS`` such sentences for that finding or the corpus has no
more; (C) uniform draws top the set up to ``MIN_SENTENCES`` if needed.
Second rule, added after reading A-C: (D) in rounds (``TOPUP_ROUNDS``), for each finding that
still had fewer than 10 ``present`` rows after reading the set so far, a fixed number of more
sentences by rule B's filter, round k from its own seeded stream (seed + k), so that earlier
stages stay exactly as they were.
"""
from __future__ import annotations

import argparse
import csv
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kgvlp.data.readers.iu_xray import parse_report

SEED = 19
UNIFORM_DRAWS = 300
MIN_STEM_HITS = 14
MIN_SENTENCES = 420
# (findings with < 10 present rows after reading the set so far, draws per finding). Fixed
# here, not read back from labels.tsv, so the sample does not move when labels are added.
TOPUP_ROUNDS = (
    (("pulmonary edema", "pleural effusion", "pneumonia", "pulmonary nodule", "mass", "fibrotic band"), 12),
    (("pneumonia",), 16),  # after round 1 pneumonia had 6: most IU pneumonia mentions are hedged
)
SECTIONS = ("FINDINGS", "IMPRESSION")
HERE = Path(__file__).resolve().parent
COLUMNS = ("sentence_id", "report", "section", "index", "normal_report", "text")

# Sampling stems per finding (lower-case substrings). Not a labeller: see module docstring.
STEMS = {
    "atelectasis": ("atelecta",), "cardiomegaly": ("cardiomegaly", "heart size", "enlarged heart"),
    "consolidation": ("consolidat",), "pulmonary edema": ("edema",), "pleural effusion": ("effusion",),
    "emphysema": ("emphysema",), "pneumonia": ("pneumonia", "infecti"), "pneumothorax": ("pneumothora",),
    "pulmonary nodule": ("nodul",), "mass": ("mass",), "fracture": ("fractur",),
    "opacity": ("opacit", "densit"), "granuloma": ("granulom",),
    "hyperinflated lungs": ("hyperinfla", "hyperexpan", "hyperaerat", "overinfla"),
    "fibrotic band": ("scar",), "scoliosis": ("scolio",),
    "degenerative disease of the spine": ("degenerat", "spondyl", "osteophyt"),
    "hiatal hernia": ("hiatal", "hiatus"), "aortic atherosclerosis": ("atheroscl", "calcified aort", "aortic calcif"),
    "chronic obstructive pulmonary disease": ("copd", "chronic obstructive"),
}
NEGATION_CUES = re.compile(r"\b(no|not|without|negative|free of|clear of|resolved)\b", re.I)
# A sentence ends at . ? ! followed by space; "1.5 cm" and "XXXX.XXXX" never split.
SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


@dataclass(frozen=True)
class Sentence:
    sentence_id: str
    report: str
    section: str
    index: int
    normal_report: bool
    text: str


def default_archive() -> Path:
    import torchxrayvision
    return Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"


ENUMERATOR = re.compile(r"^\d+\.$")


def split_sentences(section_text: str) -> list[str]:
    """Sentences of a section; an enumerator ("1.") is kept with the sentence it numbers and a
    stray punctuation piece (the second dot of "normal.. .") with the sentence before it."""
    pieces = [s.strip() for s in SENTENCE_END.split(section_text) if s.strip()]
    out: list[str] = []
    for piece in pieces:
        if out and (ENUMERATOR.match(out[-1]) or not any(c.isalnum() for c in piece)):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def is_normal(mesh_major: list[str]) -> bool:
    """IU tags a report with no finding by a single MeSH major heading ``normal``."""
    return bool(mesh_major) and all(term.strip().lower() == "normal" for term in mesh_major)


def read_sentences(archive: Path) -> list[Sentence]:
    out = []
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar if m.isfile() and m.name.endswith(".xml")),
                         key=lambda m: int(Path(m.name).stem))
        for member in members:
            report = parse_report(tar.extractfile(member).read())
            name = Path(member.name).name
            normal = is_normal(report.mesh_major)
            for section in SECTIONS:
                for i, text in enumerate(split_sentences(report.sections.get(section) or "")):
                    out.append(Sentence(f"{Path(name).stem}-{section[0]}{i}", name, section, i, normal, text))
    return out


def _stem_hit(text: str, finding: str) -> bool:
    low = text.lower()
    return any(stem in low for stem in STEMS[finding])


def _asserted_hit(s: Sentence, finding: str) -> bool:
    return _stem_hit(s.text, finding) and not NEGATION_CUES.search(s.text)


def sample(sentences: list[Sentence], seed: int = SEED) -> list[Sentence]:
    chosen = _sample_a_to_c(sentences, seed)
    for k, (findings, draws) in enumerate(TOPUP_ROUNDS, start=1):
        chosen = chosen + _topup(sentences, chosen, findings, draws, seed + k)
    return chosen


def _topup(sentences: list[Sentence], chosen: list[Sentence], findings: tuple[str, ...], draws: int,
           seed: int) -> list[Sentence]:
    rng = random.Random(seed)
    taken = {s.sentence_id for s in chosen}
    texts = {s.text.lower() for s in chosen}
    added = []
    for finding in findings:
        pool = [s for s in sentences if _asserted_hit(s, finding)]
        rng.shuffle(pool)
        fresh = [s for s in pool if s.sentence_id not in taken and s.text.lower() not in texts]
        for s in fresh[:draws]:
            if s.text.lower() in texts:
                continue
            added.append(s)
            taken.add(s.sentence_id)
            texts.add(s.text.lower())
    return added


def _sample_a_to_c(sentences: list[Sentence], seed: int) -> list[Sentence]:
    rng = random.Random(seed)
    chosen = rng.sample(sentences, UNIFORM_DRAWS)
    taken = {s.sentence_id for s in chosen}
    texts = {s.text.lower() for s in chosen}
    for finding in STEMS:
        have = sum(_asserted_hit(s, finding) for s in chosen)
        pool = [s for s in sentences if _asserted_hit(s, finding)]
        rng.shuffle(pool)
        for s in pool:
            if have >= MIN_STEM_HITS:
                break
            if s.sentence_id in taken or s.text.lower() in texts:
                continue
            chosen.append(s)
            taken.add(s.sentence_id)
            texts.add(s.text.lower())
            have += 1
    rest = [s for s in sentences if s.sentence_id not in taken]
    rng.shuffle(rest)
    chosen.extend(rest[:max(0, MIN_SENTENCES - len(chosen))])
    return chosen


def write_tsv(rows: list[Sentence], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(COLUMNS)
        for s in rows:
            writer.writerow([s.sentence_id, s.report, s.section, s.index, int(s.normal_report), s.text])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=None, help="NLMCXR_reports.tgz (default: torchxrayvision's)")
    parser.add_argument("--out", type=Path, default=HERE / "sentences.tsv")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    sentences = read_sentences(args.archive or default_archive())
    chosen = sample(sentences, args.seed)
    write_tsv(chosen, args.out)
    print(f"{len(sentences)} sentences in the corpus; wrote {len(chosen)} to {args.out}")


if __name__ == "__main__":
    main()
