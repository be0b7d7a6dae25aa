"""Word variants for mention detection: plurals and adjective/participle ↔ noun forms.

Every report word and every alias word is reduced to one *matching key* by
:meth:`VariantNormalizer.key`; an alias matches a phrase when their keys agree word by word.
Reductions are vocabulary-guided: a rule's result is used only when it is a word of some
alias, so "pneumonia" (ends like a Latin plural) stays "pneumonia", while "atelectatic"
becomes "atelectasis" because "atelectasis" is an alias word. Alias words are reduced
by the same rules, so "emphysematous change" (an alias) and "emphysematous changes" (a
report) both become "emphysema change".
"""
from __future__ import annotations

IRREGULAR = {"vertebrae": "vertebra", "bullae": "bulla", "bullas": "bulla", "hila": "hilum",
             "mediastina": "mediastinum", "metastases": "metastasis", "diagnoses": "diagnosis",
             "stenoses": "stenosis", "bronchi": "bronchus", "lungs": "lung"}
_KEEP = ("ss", "us", "is", "as", "os", "ys")
# Latin plurals by ending; the general "-ices"/"-aces" rules need a vocabulary ("devices").
LATIN_PLURALS = (("thoraces", "thorax"), ("apices", "apex"), ("vertices", "vertex"), ("cortices", "cortex"),
                 ("indices", "index"), ("appendices", "appendix"), ("ae", "a"))

# (suffix, replacement): Latin and English plural endings, tried in order.
PLURAL_RULES = [("aces", "ax"), ("ices", "ex"), ("ices", "ix"), ("ae", "a"), ("ia", "ium"),
                ("a", "um"), ("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"),
                ("shes", "sh"), ("ses", "sis"), ("s", "")]
# (suffix, replacement): adjective and participle forms → the noun radiologists alias
# ("masslike" → mass; the linker marks such a mention uncertain).
DERIVATION_RULES = [("like", ""), ("ative", "ation"), ("ated", "ation"), ("ified", "ification"),
                    ("anded", "ansion"), ("tic", "sis"), ("tous", ""), ("ular", "ule"),
                    ("ic", "ia"), ("ed", "ation"), ("ed", "ment"), ("ed", "ing")]


def singular(word: str) -> str:
    """English/Latin singular without a vocabulary ("pneumothoraces" → "pneumothorax",
    "opacities" → "opacity", "bullae" → "bulla", "effusions" → "effusion")."""
    w = word.lower()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if len(w) <= 3:
        return w
    if w.endswith("omas"):  # granulomas, hamartomas ("-as" words otherwise stay: "pancreas")
        return w[:-1]
    if w.endswith(_KEEP):
        return w
    for suffix, replacement in LATIN_PLURALS + (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"),
                                                ("shes", "sh")):
        if w.endswith(suffix) and (len(w) >= len(suffix) + 2 or len(suffix) > 3):
            return w[:-len(suffix)] + replacement
    return w[:-1] if w.endswith("s") else w


# Words a rule would misread: "marked" (an intensity, not "marking").
NOT_DERIVED = {"marked"}


class VariantNormalizer:
    """Maps a lower-case word to its matching key over a fixed alias vocabulary."""

    def __init__(self, vocabulary: set[str]):
        self.vocabulary = frozenset(vocabulary)
        self._cache: dict[str, str] = {}

    def _inflected_base(self, w: str) -> str | None:
        if w in IRREGULAR:
            return IRREGULAR[w]
        if len(w) <= 3:
            return None
        for suffix, replacement in PLURAL_RULES:
            if w.endswith(suffix):  # the vocabulary decides: "granulomas" → "granuloma", "pancreas" stays
                base = w[:-len(suffix)] + replacement
                if base != w and base in self.vocabulary:
                    return base
        return None

    def _derived_base(self, w: str) -> str | None:
        if len(w) <= 5 or w in NOT_DERIVED:
            return None
        for suffix, replacement in DERIVATION_RULES:
            if w.endswith(suffix):
                base = w[:-len(suffix)] + replacement
                if base in self.vocabulary:
                    return base
        return None

    def key(self, word: str) -> str:
        found = self._cache.get(word)
        if found is None:
            w = word.lower()
            base = self._inflected_base(w) or w
            if base not in self.vocabulary and singular(base) in self.vocabulary:
                base = singular(base)
            found = self._cache[word] = self._derived_base(base) or base
        return found
