"""Negation and uncertainty of concept mentions: ConText/NegEx-style trigger rules.

A *pre* trigger ("no", "may represent") covers mentions after it in the same sentence; a
*post* trigger ("is not excluded", "has resolved") covers mentions shortly before it. Scope
ends at a terminator ("but", "however", ";") or after ``PRE_WINDOW``/``POST_WINDOW`` tokens.
Pseudo-triggers ("no change in") are matched first and block the shorter trigger inside.
Measured on a hand-labelled set of IU X-ray sentences (tests/knowledge/data/context_gold.tsv,
see docs/knowledge.md).
"""
from __future__ import annotations

import re

PRE_WINDOW, POST_WINDOW = 15, 6

PSEUDO = ["no change", "no interval change", "no significant change", "no significant interval change",
          "not changed", "without change", "no increase", "no significant increase", "not only",
          "no further", "gram negative", "not significantly changed", "no new change"]
PRE_NEGATION = ["no", "not", "without", "negative for", "free of", "absence of", "absent",
                "no evidence of", "no signs of", "no sign of", "no findings of", "no radiographic evidence of",
                "rather than", "no longer", "resolution of", "resolved", "clear of", "nor", "neither",
                "never", "removal of", "interval removal of", "no definite", "no visible", "no focal"]
POST_NEGATION = ["is absent", "are absent", "not seen", "not identified", "not visualized", "not present",
                 "is not seen", "are not seen", "has resolved", "have resolved", "resolved", "is resolved",
                 "are resolved", "has been removed", "have been removed", "removed", "ruled out",
                 "is gone", "are gone", "no longer seen", "no longer visualized", "not appreciated",
                 "not evident", "is not evident", "not demonstrated"]
PRE_UNCERTAIN = ["may", "might", "could", "possible", "possibly", "probable", "probably", "likely",
                 "questionable", "question of", "suspicious for", "suspicion of", "suspicious",
                 "concerning for", "suggestive of", "suggesting", "suggests", "suggest", "worrisome for",
                 "cannot exclude", "can not exclude", "cannot rule out", "can not rule out", "rule out",
                 "r o", "differential", "differential diagnosis", "consider", "considered",
                 "equivocal", "borderline", "presumed", "presumably", "suspected", "suspect",
                 "not excluded", "cannot be excluded", "questionably", "vague", "indeterminate",
                 "difficult to exclude", "could reflect", "may reflect", "may represent", "might represent",
                 "could represent", "favor", "favored", "favoring"]
POST_UNCERTAIN = ["cannot be excluded", "can not be excluded", "not excluded", "is not excluded",
                  "are not excluded", "cannot be ruled out", "can not be ruled out", "not ruled out",
                  "is possible", "are possible", "is suspected", "are suspected", "suspected",
                  "is questioned", "is not entirely excluded", "not entirely excluded",
                  "difficult to exclude", "is likely"]
BIDIRECTIONAL_UNCERTAIN = ["versus", "vs", "or possibly", "or less likely", "and or"]
TERMINATORS = ["but", "however", "although", "though", "except", "which", "apart from", "aside from",
               "otherwise", "there is", "there are", "there has been", "now", "with interval",
               "secondary to", "due to", "consistent with", "compatible with", "representing",
               "is seen", "are seen", "noted", "is noted", "are noted", "is present", "are present",
               "remains", "remain", "persists", "persistent"]
TERMINATOR_TOKENS = {";", ":"}


def _compile(phrases: list[str]) -> list[tuple[str, ...]]:
    return sorted({tuple(p.split()) for p in phrases}, key=len, reverse=True)


_TABLES = {kind: _compile(phrases) for kind, phrases in (
    ("pseudo", PSEUDO), ("pre_neg", PRE_NEGATION), ("post_neg", POST_NEGATION),
    ("pre_unc", PRE_UNCERTAIN), ("post_unc", POST_UNCERTAIN), ("bi_unc", BIDIRECTIONAL_UNCERTAIN),
    ("term", TERMINATORS))}
_ORDER = ("pseudo", "bi_unc", "post_unc", "post_neg", "pre_unc", "pre_neg", "term")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[;:?]", text.lower())


def find_triggers(tokens: list[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) trigger matches, longest phrase first."""
    taken = [False] * len(tokens)
    found = []
    for kind in _ORDER:
        for phrase in _TABLES[kind]:
            n = len(phrase)
            for i in range(len(tokens) - n + 1):
                if tuple(tokens[i:i + n]) == phrase and not any(taken[i:i + n]):
                    found.append((i, i + n, kind))
                    taken[i:i + n] = [True] * n
    for i, tok in enumerate(tokens):
        if tok in TERMINATOR_TOKENS and not taken[i]:
            found.append((i, i + 1, "term"))
        if tok == "?" and not taken[i]:
            found.append((i, i + 1, "post_unc"))
    return sorted(found)


def _in_scope(triggers, start: int, end: int, pre: str, post: str) -> bool:
    terms = [t for t in triggers if t[2] == "term"]
    for t_start, t_end, kind in triggers:
        if kind == "bi_unc" and pre == "pre_unc":
            kind = "pre_unc" if t_end <= start else "post_unc"
        if kind == pre and t_end <= start and start - t_end <= PRE_WINDOW:
            if not any(t_end <= ts < start for ts, _, _ in terms):
                return True
        if kind == post and t_start >= end and t_start - end <= POST_WINDOW:
            if not any(end <= ts < t_start for ts, _, _ in terms):
                return True
    return False


def assess(tokens: list[str], spans: list[tuple[int, int]]) -> list[tuple[bool, bool]]:
    """(negated, uncertain) for each mention span [start, end) over ``tokens`` of one sentence."""
    triggers = find_triggers(tokens)
    out = []
    for start, end in spans:
        negated = _in_scope(triggers, start, end, "pre_neg", "post_neg")
        uncertain = _in_scope(triggers, start, end, "pre_unc", "post_unc")
        out.append((negated, uncertain))
    return out


def assess_text(sentence: str, mention: str) -> tuple[bool, bool]:
    """(negated, uncertain) of the first occurrence of ``mention`` in ``sentence`` (for tests)."""
    tokens, target = _words(sentence), _words(mention)
    for i in range(len(tokens) - len(target) + 1):
        if tokens[i:i + len(target)] == target:
            return assess(tokens, [(i, i + len(target))])[0]
    raise ValueError(f"{mention!r} not in {sentence!r}")
