"""The blind evaluation set: IU report sentences with findings labelled by reading.

Files (``knowledge/data/blind_set/``, see its README.md): ``sentences.tsv`` (one sampled
sentence a row) and ``labels.tsv`` (one row per sentence and finding the sentence speaks about;
a sentence without rows mentions none of the listed findings). ``findings.tsv`` lists the
findings that were read for, with their CUIs in the bundled UMLS subset.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

BLIND_SET_DIR = Path(__file__).resolve().parent / "data" / "blind_set"
LABELS = ("present", "absent", "uncertain")
SECTIONS = ("FINDINGS", "IMPRESSION")


class BlindSetError(ValueError):
    """A blind-set file row that breaks the schema (message names file, row and field)."""


@dataclass(frozen=True)
class BlindSentence:
    sentence_id: str
    report: str          # IU file name in NLMCXR_reports.tgz, e.g. "10.xml"
    section: str         # FINDINGS or IMPRESSION
    index: int           # sentence position within the section
    normal_report: bool  # the report's only MeSH major heading is "normal"
    text: str


@dataclass(frozen=True)
class BlindLabel:
    sentence_id: str
    cui: str
    finding: str
    label: str           # present | absent | uncertain


@dataclass(frozen=True)
class BlindFinding:
    cui: str
    name: str


@dataclass(frozen=True)
class BlindSet:
    sentences: list[BlindSentence]
    labels: list[BlindLabel]
    findings: list[BlindFinding]

    def labels_of(self, sentence_id: str) -> dict[str, str]:
        """CUI → label for one sentence; findings it does not speak about are absent from the dict."""
        return {lab.cui: lab.label for lab in self.labels if lab.sentence_id == sentence_id}


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if tuple(reader.fieldnames or ()) != columns:
            raise BlindSetError(f"{path}: header {reader.fieldnames}, expected {list(columns)}")
        return [(line, row) for line, row in enumerate(reader, start=2)]


def _sentence(path: Path, line: int, row: dict[str, str]) -> BlindSentence:
    if row["section"] not in SECTIONS:
        raise BlindSetError(f"{path}:{line}: section {row['section']!r}, expected one of {SECTIONS}")
    if row["normal_report"] not in ("0", "1") or not row["index"].isdigit():
        raise BlindSetError(f"{path}:{line}: normal_report must be 0/1 and index a number, "
                            f"got {row['normal_report']!r}, {row['index']!r}")
    if not (row["text"] or "").strip():
        raise BlindSetError(f"{path}:{line}: empty sentence text")
    return BlindSentence(row["sentence_id"], row["report"], row["section"], int(row["index"]),
                         row["normal_report"] == "1", row["text"])


def load_blind_set(folder: str | Path = BLIND_SET_DIR) -> BlindSet:
    folder = Path(folder)
    sentences = [_sentence(folder / "sentences.tsv", line, row) for line, row in
                 _rows(folder / "sentences.tsv", ("sentence_id", "report", "section", "index", "normal_report", "text"))]
    findings = [BlindFinding(row["cui"], row["name"]) for _, row in _rows(folder / "findings.tsv", ("cui", "name"))]
    known_ids = {s.sentence_id for s in sentences}
    names = {f.cui: f.name for f in findings}
    labels = []
    path = folder / "labels.tsv"
    for line, row in _rows(path, ("sentence_id", "cui", "finding", "label")):
        if row["sentence_id"] not in known_ids:
            raise BlindSetError(f"{path}:{line}: sentence_id {row['sentence_id']!r} is not in sentences.tsv")
        if row["cui"] not in names:
            raise BlindSetError(f"{path}:{line}: cui {row['cui']!r} is not in findings.tsv")
        if row["label"] not in LABELS:
            raise BlindSetError(f"{path}:{line}: label {row['label']!r}, expected one of {LABELS}")
        labels.append(BlindLabel(row["sentence_id"], row["cui"], row["finding"], row["label"]))
    return BlindSet(sentences, labels, findings)
