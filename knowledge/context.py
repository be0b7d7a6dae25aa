"""Negation and uncertainty of concept mentions: negspacy's NegEx with radiology termsets.

Two negspacy ``negex`` components run over the concept mentions (``doc.ents``): one marks
negated mentions (``Span._.kgvlp_negated``), one uncertain ones (``Span._.kgvlp_uncertain``).
negspacy's algorithm: a *preceding* trigger anywhere earlier in the same sentence part, or
a *following* trigger later in it, covers the mention; parts end at sentence ends and at
termination phrases; pseudo-triggers ("no change") cancel the triggers that start inside
them. A trigger that starts before the mention covers it even when their words overlap, so
"no focal" in "No focal consolidation." negates the alias "focal consolidation".

Termsets: negspacy's ``en_clinical`` with radiology changes — phrases that hedge in a
radiology report ("rule out", "versus", "cannot", "evaluate for") move from negation to
uncertainty; radiology negations ("no definite", "clear of", "has resolved", "not seen")
and hedges ("would be a consideration", "cannot be excluded", "may represent") are added.
"""
from __future__ import annotations

from functools import lru_cache

from negspacy.termsets import termset

NEGATED, UNCERTAIN = "kgvlp_negated", "kgvlp_uncertain"

_HEDGED_IN_RADIOLOGY = {"versus", "rule out", "rules out", "r/o", "ro", "evaluate for", "cannot",
                        "can't", "cant", "doubt"}
_STOP = ["there is", "there are", "there has been", "there may be", "consistent with", "compatible with",
         "due to", "representing", "which", "with interval", "now", "otherwise", "except for",
         "remains", "persists", ";", ":"]
_NOT_A_NEGATION = ["cannot be excluded", "can not be excluded", "cannot exclude", "cannot rule out",
                   "not excluded", "not be excluded", "not entirely excluded", "not completely excluded",
                   "not ruled out", "not be ruled out", "cannot be ruled out", "no change", "not changed",
                   "without change", "without interval change", "no significant change",
                   "no significant interval change", "no new change", "not significantly changed",
                   "difficult to exclude", "not well seen", "not well visualized", "no longer than",
                   "not only"]


def negation_termset() -> dict[str, list[str]]:
    clinical = termset("en_clinical").get_patterns()
    preceding = [t for t in clinical["preceding_negations"] if t not in _HEDGED_IN_RADIOLOGY]
    preceding += ["no definite", "no visible", "no focal", "no evident", "no obvious", "no acute",
                  "no radiographic evidence of", "no findings of", "no findings to suggest", "clear of",
                  "resolution of", "interval resolution of", "resolved", "removal of", "interval removal of",
                  "no longer", "nor", "neither", "absent", "negative", "rather than", "instead of"]
    following = [t for t in clinical["following_negations"] if t not in _HEDGED_IN_RADIOLOGY]
    following += ["is absent", "are absent", "not seen", "not identified", "not visualized", "not present",
                  "has resolved", "have resolved", "resolved", "is resolved", "are resolved", "has cleared",
                  "have cleared", "has been removed", "have been removed", "removed", "is gone", "are gone",
                  "no longer seen", "no longer visualized", "not appreciated", "not evident",
                  "not demonstrated", "not detected", "is excluded", "are excluded"]
    return {"pseudo_negations": clinical["pseudo_negations"] + _NOT_A_NEGATION,
            "preceding_negations": sorted(set(preceding)),
            "following_negations": sorted(set(following)),
            "termination": sorted(set(clinical["termination"] + _STOP))}


def uncertainty_termset() -> dict[str, list[str]]:
    preceding = ["may", "might", "could", "possible", "possibly", "probable", "probably", "likely",
                 "questionable", "questionably", "question", "question of", "suspicious for", "suspicion of",
                 "suspicious", "concerning for", "concern for", "suggestive of", "suggesting", "suggests",
                 "suggest", "worrisome for", "cannot exclude", "can not exclude", "cannot rule out",
                 "can not rule out", "rule out", "r/o", "evaluate for", "evaluation for", "differential",
                 "consider", "considered", "equivocal", "borderline", "presumed", "presumably", "suspected",
                 "suspect", "indeterminate", "difficult to exclude", "versus", "vs", "favor", "favored",
                 "favoring", "or less likely", "may represent", "could represent", "might represent",
                 "can be seen with", "cannot be excluded", "not excluded", "perhaps",
                 # IU's anonymisation token stands where a hedge stood ("XXXX representing pneumonia")
                 "xxxx represent", "xxxx represents", "xxxx representing", "xxxx reflect", "xxxx reflects",
                 "xxxx reflecting", "xxxx sequela of", "xxxx sequelae of", "is xxxx", "are xxxx"]
    following = ["cannot be excluded", "can not be excluded", "not excluded", "is not excluded",
                 "are not excluded", "not entirely excluded", "not completely excluded", "cannot be ruled out",
                 "can not be ruled out", "not ruled out", "not be ruled out", "is possible", "are possible",
                 "is suspected", "are suspected", "suspected", "is questioned", "is likely", "is favored",
                 "would be a consideration", "is a consideration", "a consideration", "is considered",
                 "could be considered", "versus", "vs", "or less likely", "less likely", "more likely",
                 "difficult to exclude", "difficult to entirely exclude", "questionable", "is not entirely excluded",
                 "is limited", "?"]
    # explanations stay in the hedge's scope ("opacity, likely representing atelectasis")
    explanations = {"which", "secondary to", "due to", "representing", "consistent with", "compatible with"}
    stops = [t for t in termset("en_clinical").get_patterns()["termination"] + _STOP if t not in explanations]
    return {"pseudo_negations": ["no doubt", "without doubt", "likely benign", "there is xxxx", "there are xxxx"],
            "preceding_negations": sorted(set(preceding)),
            "following_negations": sorted(set(following)),
            # a negation opens a new clause: "possible effusion with no pneumothorax"
            "termination": sorted(set(stops + ["no", "without"]))}


def _register_linear_negex() -> None:
    """negspacy's Negex with its scope loop made linear in the number of sentences.

    negspacy checks every boundary against every mention and trigger (``doc[a:b].ents`` per
    boundary), which is quadratic in a long document. Same rule, one pass: a mention is
    covered when the earliest preceding trigger of its boundary starts before it, or the
    latest following trigger ends after it."""
    from spacy.language import Language
    from negspacy.negation import Negex

    if "kgvlp_negex" in Language.factories:
        return

    class LinearNegex(Negex):
        def negex(self, doc):
            import bisect

            preceding, following, terminating = self.process_negations(doc)
            pre_starts = sorted(start for _, start, _ in preceding)
            fol = sorted((start, end) for _, start, end in following)
            fol_starts = [start for start, _ in fol]
            ents = list(doc.ents)
            k = 0
            for low, high in self.termination_boundaries(doc, terminating):
                i = bisect.bisect_left(pre_starts, low)
                first_pre = pre_starts[i] if i < len(pre_starts) and pre_starts[i] < high else None
                j, j_end = bisect.bisect_left(fol_starts, low), bisect.bisect_left(fol_starts, high)
                last_fol_end = max((end for _, end in fol[j:j_end]), default=None)
                while k < len(ents) and ents[k].start < low:
                    k += 1
                while k < len(ents) and ents[k].start < high:
                    span = ents[k]
                    if span.end <= high and (not self.ent_types or span.label_ in self.ent_types):
                        if (first_pre is not None and first_pre < span.start) or \
                                (last_fol_end is not None and last_fol_end > span.end):
                            span._.set(self.extension_name, True)
                    k += 1
            return doc

    @Language.factory("kgvlp_negex", default_config={"neg_termset": None, "extension_name": NEGATED})
    def make_negex(nlp, name, neg_termset, extension_name):
        return LinearNegex(nlp, name, neg_termset, extension_name=extension_name)


def add_context(nlp, linear: bool = True) -> None:
    """Append the negation and uncertainty components to ``nlp`` (after mention detection).
    linear=False: negspacy's own ``negex`` component (the reference the linear one is checked against)."""
    import negspacy.negation  # noqa: F401  registers the "negex" factory

    _register_linear_negex()
    factory = "kgvlp_negex" if linear else "negex"
    nlp.add_pipe(factory, name="kgvlp_negation",
                 config={"neg_termset": negation_termset(), "extension_name": NEGATED})
    nlp.add_pipe(factory, name="kgvlp_uncertainty",
                 config={"neg_termset": uncertainty_termset(), "extension_name": UNCERTAIN})


@lru_cache(maxsize=1)
def _sentence_pipeline():
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    add_context(nlp)
    return nlp


def assess_text(sentence: str, mention: str) -> tuple[bool, bool]:
    """(negated, uncertain) of the first occurrence of ``mention`` in ``sentence``."""

    nlp = _sentence_pipeline()
    doc = nlp.make_doc(sentence)
    start = sentence.lower().find(mention.lower())
    span = doc.char_span(start, start + len(mention), label="CONCEPT") if start >= 0 else None
    if span is None:
        raise ValueError(f"{mention!r} is not a token span of {sentence!r}")
    doc.ents = [span]
    for _, component in nlp.pipeline:
        doc = component(doc)
    [ent] = doc.ents
    return bool(ent._.get(NEGATED)), bool(ent._.get(UNCERTAIN))
