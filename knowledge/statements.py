"""Radiology statements an alias matcher cannot see on its own.

* Heart-size statements: "Heart size is normal.", "The heart is not enlarged.", "Normal heart
  size." state that there is no cardiomegaly; "The heart is enlarged." that there is;
  "Borderline heart size." hedges it. The subject ("heart size") becomes a cardiomegaly
  mention with that status; so do "Enlargement of the cardiac silhouette", "Marked increase
  in heart size". "Cardiomediastinal silhouette" (heart and mediastinum together)
  is not a statement about heart size and is left alone.
* Alternatives: findings joined by "or", "/", "and/or", "versus" in a sentence that does not
  negate them are a differential ("atelectasis or scarring"): each is uncertain.
"""
from __future__ import annotations

HEART = {"heart", "cardiac"}
HEART_NOUNS = {"size", "silhouette", "silhouettes", "contour", "contours", "shadow"}
NORMAL = {"normal", "unremarkable"}
ENLARGED = {"enlarged", "enlargement", "large", "increased"}
HEDGES = {"may", "might", "could", "possibly", "probably", "likely", "borderline", "questionable",
          "question", "questionably"}
NEGATORS = {"not", "no"}
CLAUSE_ENDS = {".", ";", ":", "but", "however", "with", "although", "though", "while", "which", "there"}
WINDOW = 8
ALTERNATIVE = {"or", "/", "and/or", "versus", "vs"}
LIST_GLUE = ALTERNATIVE | {",", "and", "xxxx"}


def heart_size_statements(doc) -> list[tuple[int, int, str]]:
    """(start, end, present|absent|uncertain) token spans of heart-size subjects with a verdict."""
    found = []
    for sent in doc.sents:
        tokens = list(sent)
        for i, tok in enumerate(tokens):
            if tok.lower_ not in HEART:
                continue
            end = i + 1 + (i + 1 < len(tokens) and tokens[i + 1].lower_ in HEART_NOUNS)
            near, before = {t.lower_ for t in tokens[max(0, i - 2):i]}, {t.lower_ for t in tokens[max(0, i - 4):i]}
            verdict = ("absent" if "normal" in near else "uncertain" if "borderline" in near
                       else "present" if before & (ENLARGED | {"increase"}) else None)
            negated = hedged = False
            for t in tokens[end:end + WINDOW]:
                word = t.lower_
                if verdict is not None or word in CLAUSE_ENDS:
                    break
                negated |= word in NEGATORS
                hedged |= word in HEDGES
                if word in NORMAL:
                    verdict = "present" if negated else "absent"
                elif word in ENLARGED:
                    verdict = "absent" if negated else "present"
            if verdict is not None:
                found.append((sent.start + i, sent.start + end, "uncertain" if hedged else verdict))
    return found


def alternative_groups(doc, ents) -> list[list[int]]:
    """Indices into ``ents`` of mentions that a sentence offers as alternatives."""
    groups, current, has_alternative = [], [0] if ents else [], False
    for k in range(1, len(ents)):
        between = [t.lower_ for t in doc[ents[k - 1].end:ents[k].start]]
        linked = (len(between) <= 4 and all(w in LIST_GLUE for w in between)
                  and ents[k - 1].sent.start == ents[k].sent.start)
        if linked:
            current.append(k)
            has_alternative |= any(w in ALTERNATIVE for w in between)
            continue
        if has_alternative and len(current) > 1:
            groups.append(current)
        current, has_alternative = [k], False
    if has_alternative and len(current) > 1:
        groups.append(current)
    return groups
