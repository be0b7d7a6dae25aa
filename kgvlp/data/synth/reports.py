"""Radiology reports for SynthCXR studies, with the words that mention each finding.

Phrasing follows the structure of real chest radiograph reports (the Indiana University
collection was read for style; no sentence is copied): a FINDINGS section covering
devices, heart and mediastinum, lungs, pleura and bones in varied order and wording, and
an IMPRESSION that summarises. Findings that are absent are often negated ("No pleural
effusion or pneumothorax."), some present ones are hedged ("may represent atelectasis").

Templates mark a mention as ``[[words]]``; each mark is bound to a ``Mention`` in order.
Word indices are computed on the cleaned text exactly as ``kgvlp.data.text.split_sentences``
produces it (lower-case ``\\w+`` words, sentences under two words dropped), counted
across the whole report (findings then impression).

Difficulty knobs (``SynthConfig``): ``paraphrase`` narrows each sentence's wordings to its
first share (order and section layout still vary), ``hedge_rate`` scales the chance a
present finding is hedged, ``negation_rate`` keeps each negation sentence with that chance
(drawn from a second generator, so the rest of the report is unchanged), and
``omit_from_reports`` writes the report as if those findings did not exist: no sentence
names them, present or negated.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from kgvlp.config.schema import SynthConfig
from kgvlp.data.synth.findings import Instance
from kgvlp.data.text import _SENTENCE_END, split_sentences

_MARK = re.compile(r"\[\[|\]\]|\w+")


@dataclass
class Mention:
    finding: str
    instances: list[int]              # rows in the study's instance list; [] when negated
    negated: bool = False
    uncertain: bool = False
    words: list[int] = field(default_factory=list)


@dataclass
class Sentence:
    template: str
    mentions: list[Mention]


class _Draw:
    """The report's random source: numpy's generator plus the knobs that shape wording."""

    def __init__(self, rng: np.random.Generator, knobs: SynthConfig):
        self.rng, self.knobs = rng, knobs

    def random(self) -> float:
        return self.rng.random()

    def integers(self, *args):
        return self.rng.integers(*args)

    def shuffle(self, items: list) -> None:
        self.rng.shuffle(items)

    def hedged(self, chance: float) -> bool:
        return self.rng.random() < min(1.0, chance * self.knobs.hedge_rate)


def _pick(rng: _Draw, options):
    n = len(options)
    if rng.knobs.paraphrase < 1.0:   # the first ceil(share × n) wordings (at least one)
        n = max(1, math.ceil(rng.knobs.paraphrase * n))
    return options[int(rng.integers(n))]


def _device_sentence(rng, inst: Instance, i: int) -> Sentence:
    d = inst.detail["device"]
    side = inst.side or ""
    m = [Mention("support_devices", [i])]
    if d == "endotracheal tube":
        t = _pick(rng, ["[[Endotracheal tube]] terminates approximately {cm} cm above the carina.",
                        "The [[endotracheal tube]] tip is {cm} cm above the carina.",
                        "[[ET tube]] in satisfactory position, {cm} cm above the carina."])
        return Sentence(t.format(cm=int(rng.integers(3, 7))), m)
    if d == "nasogastric tube":
        return Sentence(_pick(rng, ["[[Nasogastric tube]] courses below the diaphragm with the tip in the stomach.",
                                    "An [[enteric tube]] extends into the stomach.",
                                    "[[NG tube]] tip projects over the gastric fundus."]), m)
    if d == "central venous catheter":
        return Sentence(_pick(rng, [f"{side.capitalize()} subclavian [[central venous catheter]] tip projects over the cavoatrial junction.",
                                    f"There is a {side} subclavian [[central line]] with tip in the superior vena cava.",
                                    f"{side.capitalize()}-sided [[central venous catheter]] terminates in the low SVC."]), m)
    if d == "pacemaker":
        return Sentence(_pick(rng, ["Left chest wall [[pacemaker]] with lead terminating in the right ventricle.",
                                    "A [[cardiac pacemaker]] overlies the left upper chest with a single lead.",
                                    "[[Pacemaker]] generator projects over the left chest, lead in expected position."]), m)
    return Sentence(_pick(rng, [f"{side.capitalize()} basilar [[chest tube]] in place.",
                                f"A {side} [[chest tube]] is present with tip at the apex.",
                                f"Interval placement of a {side} [[pleural drain]]."]), m)


def _heart(rng, cardio: list[int], instances) -> list[Sentence]:
    if cardio:
        size = instances[cardio[0]].size
        m = [Mention("cardiomegaly", cardio)]
        t = _pick(rng, [f"{size.capitalize()} [[cardiomegaly]].",
                        "The [[cardiac silhouette is enlarged]].",
                        f"The [[heart is {size}ly enlarged]]." if size != "marked" else "The [[heart is markedly enlarged]].",
                        f"There is {size} [[enlargement of the cardiac silhouette]]."])
        return [Sentence(t, m), Sentence(_pick(rng, ["Mediastinal contours are otherwise unremarkable.",
                                                      "The mediastinum is not widened."]), [])]
    m = [Mention("cardiomegaly", [], negated=True)]
    return [Sentence(_pick(rng, ["The [[heart]] is normal in size.",
                                 "[[Heart size]] is within normal limits.",
                                 "Normal [[heart size]].",
                                 "The [[cardiomediastinal silhouette]] is within normal limits.",
                                 "[[Heart size]] and mediastinal contours are normal."]), m)]


def _effusion(rng, rows: list[int], instances) -> list[Sentence]:
    if len(rows) == 2:
        a, b = (instances[r] for r in rows)
        if a.size == b.size:
            t = _pick(rng, [f"{a.size.capitalize()} bilateral [[pleural effusions]].",
                            f"There are {a.size} bilateral [[pleural effusions]].",
                            f"{a.size.capitalize()} bilateral [[effusions]] are present."])
        else:
            t = f"{a.size.capitalize()} {a.side} and {b.size} {b.side} [[pleural effusions]]."
        return [Sentence(t, [Mention("pleural_effusion", rows)])]
    inst = instances[rows[0]]
    if inst.size == "small" and rng.hedged(0.35):
        return [Sentence(f"Blunting of the {inst.side} costophrenic angle may represent a small [[pleural effusion]].",
                         [Mention("pleural_effusion", rows, uncertain=True)])]
    t = _pick(rng, [f"There is a {inst.size} {inst.side} [[pleural effusion]].",
                    f"{inst.size.capitalize()} {inst.side} [[pleural effusion]].",
                    f"{inst.size.capitalize()} {inst.side}-sided [[effusion]] is noted."])
    return [Sentence(t, [Mention("pleural_effusion", rows)])]


def _lung_sentence(rng, inst: Instance, i: int) -> Sentence:
    f, lobe, m = inst.finding, inst.lobe, [Mention(inst.finding, [i])]
    if f == "consolidation":
        return Sentence(_pick(rng, [f"Focal [[consolidation]] in the {lobe}.",
                                    f"There is patchy [[airspace opacity]] in the {lobe}, concerning for pneumonia.",
                                    f"[[Airspace consolidation]] is seen in the {lobe}.",
                                    f"New {lobe} [[opacity]] compatible with pneumonia."]), m)
    if f == "atelectasis":
        if rng.hedged(0.4):
            return Sentence(f"Linear opacity at the {inst.side} lung base may represent [[atelectasis]].",
                            [Mention("atelectasis", [i], uncertain=True)])
        return Sentence(_pick(rng, [f"Plate-like [[atelectasis]] at the {inst.side} base.",
                                    f"{inst.side.capitalize()} basilar [[atelectasis]].",
                                    f"Streaky {inst.side} basilar opacity, likely [[subsegmental atelectasis]]."]), m)
    if f == "nodule":
        return Sentence(_pick(rng, [f"A {inst.size} [[nodule]] is seen in the {lobe}.",
                                    f"There is a {inst.size} rounded [[nodular opacity]] in the {lobe}.",
                                    f"{inst.size.capitalize()} [[pulmonary nodule]] projects over the {lobe}."]), m)
    if f == "mass":
        return Sentence(_pick(rng, [f"A {inst.size} [[mass]] in the {lobe} is concerning for malignancy.",
                                    f"Lobulated {lobe} [[mass]] measuring {inst.size}.",
                                    f"There is a {inst.size} [[pulmonary mass]] in the {lobe}."]), m)
    if f == "edema":
        return Sentence(_pick(rng, [f"{inst.size.capitalize()} [[pulmonary edema]].",
                                    "Perihilar haziness and vascular indistinctness consistent with [[interstitial edema]].",
                                    f"There is {inst.size} [[pulmonary edema]]."]), m)
    if f == "pneumothorax":
        where = f"{inst.side} apical" if inst.detail.get("apical") else inst.side
        return Sentence(_pick(rng, [f"There is a {inst.size} {where} [[pneumothorax]].",
                                    f"{inst.size.capitalize()} {where} [[pneumothorax]] is present.",
                                    f"A {where} [[pneumothorax]] is seen, {inst.size} in size."]), m)
    raise ValueError(f)


def _negations(rng, present: set[str], omitted: frozenset[str] = frozenset()) -> list[Sentence]:
    out = []
    absent_pleura = [f for f in ("pleural_effusion", "pneumothorax") if f not in present and f not in omitted]
    words = {"pleural_effusion": "pleural effusion", "pneumothorax": "pneumothorax"}
    if len(absent_pleura) == 2:
        a, b = absent_pleura if rng.random() < 0.5 else absent_pleura[::-1]
        t = _pick(rng, [f"No [[{words[a]}]] or [[{words[b]}]].",
                        f"There is no [[{words[a]}]] or [[{words[b]}]].",
                        f"No [[{words[a]}]] or [[{words[b]}]] is seen."])
        out.append(Sentence(t, [Mention(a, [], negated=True), Mention(b, [], negated=True)]))
    elif absent_pleura:
        out.append(Sentence(_pick(rng, ["No [[{}]].", "There is no [[{}]]."]).format(words[absent_pleura[0]]),
                            [Mention(absent_pleura[0], [], negated=True)]))
    parenchymal = {"consolidation", "nodule", "mass", "edema", "atelectasis"} & present
    if not parenchymal:
        if rng.random() < 0.5:
            out.append(Sentence(_pick(rng, ["The lungs are clear.", "Lungs are clear bilaterally.",
                                            "The lungs are well expanded and clear."]), []))
        else:
            out.append(Sentence(_pick(rng, ["No focal [[consolidation]].", "No focal airspace [[consolidation]].",
                                            "No focal [[airspace opacity]] to suggest pneumonia."]),
                                [Mention("consolidation", [], negated=True)]))
    elif "consolidation" not in present and rng.random() < 0.5:
        out.append(Sentence("No focal [[consolidation]].", [Mention("consolidation", [], negated=True)]))
    if "edema" not in present and rng.random() < 0.3:
        out.append(Sentence(_pick(rng, ["No [[pulmonary edema]].", "No evidence of [[pulmonary edema]]."]),
                            [Mention("edema", [], negated=True)]))
    if not ({"nodule", "mass"} & present) and rng.random() < 0.15:
        out.append(Sentence("No suspicious pulmonary [[nodule]] or [[mass]].",
                            [Mention("nodule", [], negated=True), Mention("mass", [], negated=True)]))
    return out


_IMPRESSION_NAMES = {"cardiomegaly": "Cardiomegaly", "edema": "pulmonary edema",
                     "consolidation": "consolidation", "nodule": "pulmonary nodule",
                     "mass": "pulmonary mass", "atelectasis": "atelectasis",
                     "pneumothorax": "pneumothorax", "support_devices": "support devices"}


def _impression(rng, by_finding: dict[str, list[int]], instances) -> list[Sentence]:
    if not by_finding or set(by_finding) == {"support_devices"}:
        lines = [Sentence(_pick(rng, ["No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.",
                                      "No active disease in the chest.", "Normal chest radiograph."]), [])]
        if by_finding:
            lines.insert(0, Sentence("[[Support devices]] in expected position.",
                                     [Mention("support_devices", by_finding["support_devices"])]))
        return lines
    lines = []
    order = [f for f in ("pneumothorax", "mass", "consolidation", "cardiomegaly", "edema",
                         "pleural_effusion", "nodule", "atelectasis", "support_devices") if f in by_finding]
    for f in order:
        rows = by_finding[f]
        if f == "pleural_effusion":
            sides = " and ".join(sorted({instances[r].side for r in rows})) if len(rows) == 1 else "bilateral"
            lines.append(Sentence(f"{sides.capitalize()} [[pleural effusion{'s' if len(rows) > 1 else ''}]].",
                                  [Mention(f, rows)]))
        elif f in ("pneumothorax", "consolidation", "mass", "nodule", "atelectasis"):
            inst = instances[rows[0]]
            where = inst.lobe if inst.lobe and f != "atelectasis" else f"{inst.side}"
            name = _IMPRESSION_NAMES[f]
            hedge = "possible " if f == "atelectasis" and rng.hedged(0.3) else ""
            lines.append(Sentence(f"{where.capitalize()} {hedge}[[{name}]].",
                                  [Mention(f, rows, uncertain=bool(hedge))]))
        elif f == "support_devices":
            lines.append(Sentence("[[Support devices]] as described.", [Mention(f, rows)]))
        elif f == "cardiomegaly":
            size = instances[rows[0]].size
            lines.append(Sentence(f"{size.capitalize()} [[cardiomegaly]].", [Mention(f, rows)]))
        else:
            lines.append(Sentence(f"{instances[rows[0]].size.capitalize()} [[pulmonary edema]].", [Mention(f, rows)]))
    if rng.random() < 0.4 and len(lines) > 1:  # numbered list, as many radiologists write
        for k, s in enumerate(lines, 1):
            s.template = f"{k}. {s.template}"
    return lines


def _names_omitted(sentence: Sentence, omitted: frozenset[str]) -> bool:
    return any(m.finding in omitted for m in sentence.mentions)


def write_report(rng: np.random.Generator, instances: list[Instance], knobs: SynthConfig | None = None,
                 knob_rng: np.random.Generator | None = None) -> tuple[str, str, list[Mention]]:
    """FINDINGS text, IMPRESSION text and every mention (word indices filled in).

    ``knob_rng`` draws which negation sentences ``knobs.negation_rate`` keeps (needed when it is < 1).
    """
    knobs = knobs or SynthConfig()
    rng = _Draw(rng, knobs)
    omitted = frozenset(knobs.omit_from_reports)
    by_finding: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        if inst.finding not in omitted:
            by_finding.setdefault(inst.finding, []).append(i)
    present = set(by_finding)
    devices = [_device_sentence(rng, instances[i], i) for i in by_finding.get("support_devices", [])]
    heart = _heart(rng, by_finding.get("cardiomegaly", []), instances)
    lungs = [_lung_sentence(rng, instances[i], i) for f in ("consolidation", "nodule", "mass", "edema", "atelectasis")
             for i in by_finding.get(f, [])]
    pleura = (_effusion(rng, by_finding["pleural_effusion"], instances) if "pleural_effusion" in present else [])
    pleura += [_lung_sentence(rng, instances[i], i) for i in by_finding.get("pneumothorax", [])]
    rng.shuffle(lungs)
    groups = [heart, lungs + pleura, _negations(rng, present, omitted)]
    if rng.random() < 0.5:
        groups[0], groups[1] = groups[1], groups[0]
    if rng.random() < 0.6:
        groups.append([Sentence(_pick(rng, ["The osseous structures are intact.", "No acute bony abnormality.",
                                            "Degenerative changes of the thoracic spine.",
                                            "Visualized osseous structures are unremarkable."]), [])])
    findings = [s for s in devices + [s for g in groups for s in g] if not _names_omitted(s, omitted)]
    if knobs.negation_rate < 1.0:   # a negation sentence: every finding it names is negated
        findings = [s for s in findings if not (s.mentions and all(m.negated for m in s.mentions))
                    or knob_rng.random() < knobs.negation_rate]
    impression = _impression(rng, by_finding, instances)
    findings_text = " ".join(s.template for s in findings)
    impression_text = " ".join(s.template for s in impression)
    mentions = [m for s in findings + impression for m in s.mentions]
    _assign_words(findings_text + "\n" + impression_text, mentions)
    return _unmark(findings_text), _unmark(impression_text), mentions


def _unmark(text: str) -> str:
    return text.replace("[[", "").replace("]]", "")


def _assign_words(marked: str, mentions: list[Mention]) -> None:
    """Fill ``Mention.words`` with indices into the cleaned report's word list."""
    cursor, word, open_mention = 0, 0, None
    for raw in _SENTENCE_END.split(marked):
        tokens = _MARK.findall(raw)
        n_words = sum(t not in ("[[", "]]") for t in tokens)
        kept = n_words >= 2  # split_sentences drops shorter sentences
        for t in tokens:
            if t == "[[":
                open_mention = mentions[cursor]
                cursor += 1
            elif t == "]]":
                open_mention = None
            elif kept:
                if open_mention is not None:
                    open_mention.words.append(word)
                word += 1
    assert cursor == len(mentions), "every [[mark]] needs a Mention"
    assert word == sum(len(s.split()) for s in split_sentences(_unmark(marked)))
