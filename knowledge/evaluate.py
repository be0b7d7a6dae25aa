"""Score the linker and two rule-based baselines on the blind set (``kgvlp knowledge evaluate``).

Unit: one (sentence, finding) pair, each sentence linked on its own. Gold is the blind set's
label (present / absent / uncertain) or *none* when the sentence has no row for the finding.
A system's status for a pair: its mentions of the finding's concept or of a concept that
``isa`` it (the blind set's labelling convention: calcified granuloma → granuloma), combined by
:func:`knowledge.baselines.combine` (asserted beats hedged beats negated). A concept that is
itself one of the findings counts for itself only (the blind set reads consolidation, a
finding, apart from opacity, although the subset says consolidation isa opacity).

* Finding P/R/F1: positive = ``present`` (hedged and negated mentions are not positives).
  Micro over all findings; macro over findings with ≥ ``MACRO_MIN_POSITIVES`` gold positives.
* Negation P/R: ``absent`` predicted vs labelled; uncertainty P/R: ``uncertain`` likewise.
  Negation recall is also given over the *explicitly* negated pairs: labelled absent in a
  sentence that states a negation with one of the blind set's absent cues
  (``EXPLICIT_NEGATION``); a sentence whose negation word the dictation dropped, labelled
  from the report's impression, does not.
* False-positive rate on normal reports: share of the sentences from reports that IU tagged
  normal in which the system asserts a finding that the labels do not say is present (the
  blind set's README: predictions its labels confirm are not false positives).
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Protocol, Sequence

import networkx as nx

from knowledge.baselines import NegspacyDefault, RegexNegEx, combine
from knowledge.blind_set import BlindSet

MACRO_MIN_POSITIVES = 10
# The blind set README's cues for `absent`: no, without, negative for, free of, clear of,
# resolved/resolution of, not … enlarged, heart size normal/within/upper limits of normal.
EXPLICIT_NEGATION = re.compile(r"\b(no|not|without|negative|free|clear|resolved|resolution|normal|within|"
                               r"unremarkable)\b", re.I)


class System(Protocol):
    name: str

    def predict(self, sentences: Sequence[str]) -> list[dict[str, str]]: ...


@dataclasses.dataclass
class FindingScore:
    cui: str
    name: str
    positives: int
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@dataclasses.dataclass
class Rate:
    hits: int
    total: int

    @property
    def value(self) -> float:
        return _ratio(self.hits, self.total)


@dataclasses.dataclass
class SystemScore:
    name: str
    findings: list[FindingScore]
    negation_precision: Rate
    negation_recall: Rate
    explicit_negation_recall: Rate
    uncertainty_precision: Rate | None   # None: the system has no uncertainty detection
    uncertainty_recall: Rate | None
    normal_false_positives: Rate

    def micro(self) -> FindingScore:
        return FindingScore("", "micro", sum(f.positives for f in self.findings), sum(f.tp for f in self.findings),
                            sum(f.fp for f in self.findings), sum(f.fn for f in self.findings))

    def macro_f1(self) -> float:
        scored = [f.f1 for f in self.findings if f.positives >= MACRO_MIN_POSITIVES]
        return sum(scored) / len(scored) if scored else 0.0


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def descendants(g: nx.MultiDiGraph, cui: str, apart: frozenset[str] = frozenset()) -> set[str]:
    """``cui`` and every concept that isa it (edges child → parent with RELA isa), not
    descending into the concepts in ``apart`` (other findings)."""
    children: dict[str, set[str]] = {}
    for child, parent, d in g.edges(data=True):
        if d.get("rela") == "isa":
            children.setdefault(parent, set()).add(child)
    found, todo = {cui}, [cui]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found and child not in apart:
                found.add(child)
                todo.append(child)
    return found


def finding_synonyms(g: nx.MultiDiGraph, cuis: Sequence[str]) -> dict[str, list[str]]:
    """Finding CUI → names and aliases of it and its isa-descendants (the baselines' synonyms)."""
    out = {}
    for cui in cuis:
        names = []
        for member in sorted(descendants(g, cui, frozenset(cuis) - {cui})):
            d = g.nodes[member]
            names += [d["name"], *d.get("aliases", [])]
        out[cui] = sorted(set(names))
    return out


class KgvlpLinker:
    """The knowledge linker as a system: mentions → finding statuses."""

    name = "kgvlp linker"

    def __init__(self, linker, g: nx.MultiDiGraph, cuis: Sequence[str]):
        self.linker = linker
        self.finding_of: dict[str, list[str]] = {}
        for cui in cuis:
            for member in descendants(g, cui, frozenset(cuis) - {cui}):
                self.finding_of.setdefault(member, []).append(cui)

    def predict(self, sentences: Sequence[str]) -> list[dict[str, str]]:
        out = []
        for mentions in self.linker.link_batch(list(sentences)):
            statuses: dict[str, list[str]] = {}
            for m in mentions:
                status = "absent" if m.negated else "uncertain" if m.uncertain else "present"
                for finding in self.finding_of.get(m.cui, ()):
                    statuses.setdefault(finding, []).append(status)
            out.append({cui: combine(s) for cui, s in statuses.items()})
        return out


def score(system: System, blind: BlindSet, has_uncertainty: bool = True) -> tuple[SystemScore, list[dict]]:
    """The system's scores and its wrong (sentence, finding) pairs."""
    predictions = system.predict([s.text for s in blind.sentences])
    findings = {f.cui: FindingScore(f.cui, f.name, 0, 0, 0, 0) for f in blind.findings}
    counts: collections.Counter = collections.Counter()
    errors, normal_fp, normal_total = [], 0, 0
    for sentence, predicted in zip(blind.sentences, predictions):
        gold = blind.labels_of(sentence.sentence_id)
        explicit = bool(EXPLICIT_NEGATION.search(sentence.text))
        false_positive = False
        for cui, f in findings.items():
            g, p = gold.get(cui, "none"), predicted.get(cui, "none")
            f.positives += g == "present"
            f.tp += g == "present" and p == "present"
            f.fp += g != "present" and p == "present"
            f.fn += g == "present" and p != "present"
            false_positive |= g != "present" and p == "present"
            for label in ("absent", "uncertain"):
                counts[label, "tp"] += g == label and p == label
                counts[label, "pred"] += p == label
                counts[label, "gold"] += g == label
            counts["explicit", "tp"] += explicit and g == "absent" and p == "absent"
            counts["explicit", "gold"] += explicit and g == "absent"
            if g != p:
                errors.append({"sentence_id": sentence.sentence_id, "finding": f.name, "gold": g,
                               "predicted": p, "text": sentence.text})
        if sentence.normal_report:
            normal_total += 1
            normal_fp += false_positive
    unc_p = Rate(counts["uncertain", "tp"], counts["uncertain", "pred"]) if has_uncertainty else None
    unc_r = Rate(counts["uncertain", "tp"], counts["uncertain", "gold"]) if has_uncertainty else None
    return SystemScore(system.name, list(findings.values()),
                       Rate(counts["absent", "tp"], counts["absent", "pred"]),
                       Rate(counts["absent", "tp"], counts["absent", "gold"]),
                       Rate(counts["explicit", "tp"], counts["explicit", "gold"]), unc_p, unc_r,
                       Rate(normal_fp, normal_total)), errors


def evaluate(blind: BlindSet, g: nx.MultiDiGraph, linker=None) -> list[tuple[SystemScore, list[dict]]]:
    """kgvlp's linker and both baselines on ``blind`` (synonyms from ``g``)."""
    from knowledge.linking import Linker

    cuis = [f.cui for f in blind.findings]
    synonyms = finding_synonyms(g, cuis)
    return [score(KgvlpLinker(linker or Linker(g), g, cuis), blind),
            score(RegexNegEx(synonyms), blind),
            score(NegspacyDefault(synonyms), blind, has_uncertainty=False)]


def _fmt(rate: Rate | None) -> str:
    return "n/a" if rate is None else f"{rate.value:.3f}"


def format_report(results: Sequence[SystemScore], blind: BlindSet) -> str:
    """Markdown tables: summary per system, then per-finding P/R/F1 for every system."""
    n_pairs = len(blind.sentences) * len(blind.findings)
    lines = [f"Blind set: {len(blind.sentences)} sentences × {len(blind.findings)} findings = {n_pairs} pairs, "
             f"{len(blind.labels)} labelled; macro F1 over findings with ≥ {MACRO_MIN_POSITIVES} present.", "",
             "| system | micro P | micro R | micro F1 | macro F1 | negation P | negation R | negation R, explicit | "
             "uncertain P | uncertain R | FP normal sentences |", "|---" * 11 + "|"]
    for r in results:
        m = r.micro()
        fp = r.normal_false_positives
        lines.append(f"| {r.name} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {r.macro_f1():.3f} | "
                     f"{_fmt(r.negation_precision)} | {_fmt(r.negation_recall)} | "
                     f"{_fmt(r.explicit_negation_recall)} ({r.explicit_negation_recall.total}) | {_fmt(r.uncertainty_precision)} | "
                     f"{_fmt(r.uncertainty_recall)} | {fp.value:.1%} ({fp.hits}/{fp.total}) |")
    lines += ["", "| finding | present | " + " | ".join(f"{r.name} P / R / F1" for r in results) + " |",
              "|---" * (2 + len(results)) + "|"]
    for i, f in enumerate(results[0].findings):
        cells = [f"{r.findings[i].precision:.2f} / {r.findings[i].recall:.2f} / {r.findings[i].f1:.2f}"
                 for r in results]
        lines.append(f"| {f.name} | {f.positives} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
