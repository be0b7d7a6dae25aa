"""Two rule-based baselines for ``kgvlp knowledge evaluate`` (issue 19), given the same synonyms.

* ``RegexNegEx``: one case-insensitive regular expression per finding over its synonyms
  (optional plural "s"), NegEx's trigger lists (Chapman et al. 2001: pre-negation within
  five words before, post-negation within five words after, pseudo-negations skipped) and a
  short hedge list scored the same way for uncertainty.
* ``NegspacyDefault``: a spaCy EntityRuler (LOWER) over the same synonyms and negspacy's
  default ``en_clinical`` termset, unchanged. negspacy has no uncertainty: it never says
  uncertain.

Each ``predict(sentences)`` returns, per sentence, ``{finding CUI: present|absent|uncertain}``
for the findings it mentions.
"""
from __future__ import annotations

import re
from typing import Sequence

NEGEX_PRE = ["no", "not", "without", "denies", "denied", "negative for", "no evidence of", "no signs of",
             "no sign of", "free of", "absence of", "no suspicious", "no new", "ruled out", "rules out",
             "no findings of", "not demonstrate", "fails to reveal", "never", "resolved"]
NEGEX_POST = ["free", "unlikely", "was ruled out", "is ruled out", "are ruled out", "not seen",
              "not identified", "is absent", "are absent"]
NEGEX_PSEUDO = ["no change", "no increase", "no interval change", "no significant change", "not only",
                "gram negative", "without difficulty", "not cause", "not extend"]
HEDGE_PRE = ["possible", "possibly", "probable", "probably", "may", "might", "could", "likely",
             "suspicious for", "suspected", "questionable", "cannot exclude", "concerning for",
             "suggestive of", "versus", "rule out", "consider"]
HEDGE_POST = ["cannot be excluded", "not excluded", "is possible", "versus", "is suspected",
              "is not excluded", "cannot be ruled out"]
WINDOW = 5


def _alternation(phrases: Sequence[str]) -> str:
    return "|".join(r"\s+".join(map(re.escape, p.split())) for p in sorted(set(phrases), key=len, reverse=True))


class RegexNegEx:
    """Regular-expression synonym matcher with NegEx triggers in a five-word window."""

    name = "regex + NegEx"

    def __init__(self, synonyms: dict[str, list[str]]):
        self.patterns = {cui: re.compile(rf"\b(?:{_alternation(words)})s?\b", re.I) for cui, words in synonyms.items()}
        self.pseudo = re.compile(rf"\b(?:{_alternation(NEGEX_PSEUDO)})\b", re.I)
        self.triggers = {kind: re.compile(rf"\b(?:{_alternation(words)})\b", re.I) for kind, words in
                         (("neg_pre", NEGEX_PRE), ("neg_post", NEGEX_POST), ("unc_pre", HEDGE_PRE),
                          ("unc_post", HEDGE_POST))}

    def _near(self, kind: str, text: str) -> bool:
        text = self.pseudo.sub(" ", text)
        words = text.split()
        window = " ".join(words[-WINDOW:] if kind.endswith("pre") else words[:WINDOW])
        return bool(self.triggers[kind].search(window))

    def _status(self, sentence: str, match: re.Match) -> str:
        before, after = sentence[:match.start()], sentence[match.end():]
        if self._near("neg_pre", before) or self._near("neg_post", after):
            return "absent"
        if self._near("unc_pre", before) or self._near("unc_post", after):
            return "uncertain"
        return "present"

    def predict(self, sentences: Sequence[str]) -> list[dict[str, str]]:
        out = []
        for sentence in sentences:
            found = {}
            for cui, pattern in self.patterns.items():
                statuses = [self._status(sentence, m) for m in pattern.finditer(sentence)]
                if statuses:
                    found[cui] = combine(statuses)
            out.append(found)
        return out


class NegspacyDefault:
    """spaCy EntityRuler over the synonyms + negspacy's default termset (negation only)."""

    name = "EntityRuler + negspacy default"

    def __init__(self, synonyms: dict[str, list[str]]):
        import spacy
        import negspacy.negation  # noqa: F401  registers "negex"

        self.nlp = spacy.blank("en")
        self.nlp.add_pipe("sentencizer")
        ruler = self.nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
        ruler.add_patterns([{"label": "FINDING", "pattern": p, "id": cui}
                            for cui, words in synonyms.items() for p in sorted(set(w.lower() for w in words))])
        self.nlp.add_pipe("negex")

    def predict(self, sentences: Sequence[str]) -> list[dict[str, str]]:
        out = []
        for doc in self.nlp.pipe(sentences):
            statuses: dict[str, list[str]] = {}
            for ent in doc.ents:
                statuses.setdefault(ent.ent_id_, []).append("absent" if ent._.negex else "present")
            out.append({cui: combine(s) for cui, s in statuses.items()})
        return out


def combine(statuses: Sequence[str]) -> str:
    """One status for several mentions of a finding in a sentence: any asserted mention makes
    it present, else any hedged one uncertain, else absent."""
    for status in ("present", "uncertain"):
        if status in statuses:
            return status
    return "absent"
