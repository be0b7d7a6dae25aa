"""Finding detection from report text alone, on real IU report sentences (the blind set).

Each sentence is scored for each finding by its text embedding alone:
``cos(sentence, "There is X.") − cos(sentence, "No X.")``, and the score is compared with the
blind set's reading (knowledge/data/blind_set/, labelled by hand):

* ``auroc``: present (1) against every other sentence (0) — negated ("absent") sentences and
  sentences that do not speak about the finding. Sentences labelled *uncertain* for the finding
  are left out of that finding's AUROC: a hedge is neither an assertion nor a negation, and
  counting it either way would reward one reading of hedges.
* ``negation_auroc``: present against absent only (does the text side read negation?).

Both are macro averages over findings with at least ``MIN_POSITIVES`` present sentences
(and ``MIN_NEGATED`` absent ones for ``negation_auroc``). Each model is scored in two spaces:
``encoder`` (the text tower's report vector, as configured by ``model.text.global_pool``) and
``shared`` (that vector through the model's text head into the image–text space, how the
trained model embeds text for zero-shot and retrieval), when the model has heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgvlp.eval.metrics import macro_auroc

POSITIVE_TEMPLATE = "There is {}."
NEGATED_TEMPLATE = "No {}."
MIN_POSITIVES = 5
MIN_NEGATED = 3


@dataclass(frozen=True)
class TextFindingSet:
    """Sentences and, per finding, 1/0/-1 (present / not present / left out: uncertain)."""

    sentences: list[str]
    finding_names: list[str]
    present: Tensor   # (S, F) 1 present, 0 otherwise, -1 uncertain (left out)
    negated: Tensor   # (S, F) bool: labelled absent


def load_text_finding_set() -> TextFindingSet:
    """The committed blind set (knowledge.blind_set) as tensors."""
    from knowledge.blind_set import load_blind_set
    blind = load_blind_set()
    index = {f.cui: k for k, f in enumerate(blind.findings)}
    row = {s.sentence_id: i for i, s in enumerate(blind.sentences)}
    present = torch.zeros(len(blind.sentences), len(index), dtype=torch.long)
    negated = torch.zeros(len(blind.sentences), len(index), dtype=torch.bool)
    for label in blind.labels:
        i, k = row[label.sentence_id], index[label.cui]
        if label.label == "present":
            present[i, k] = 1
        elif label.label == "uncertain":
            present[i, k] = -1
        else:
            negated[i, k] = True
    return TextFindingSet([s.text for s in blind.sentences], [f.name for f in blind.findings],
                          present, negated)


def finding_scores(embed, sentences: list[str], finding_names: list[str]) -> Tensor:
    """(S, F) cos(sentence, positive prompt) − cos(sentence, negated prompt); ``embed``: texts → (N, D)."""
    unit = lambda x: torch.nn.functional.normalize(x.float(), dim=-1)  # noqa: E731
    text = unit(embed(sentences))
    positive = unit(embed([POSITIVE_TEMPLATE.format(n) for n in finding_names]))
    negative = unit(embed([NEGATED_TEMPLATE.format(n) for n in finding_names]))
    return text @ positive.T - text @ negative.T


def _macro(scores: Tensor, targets: Tensor, keep: Tensor, min_pos: int, min_neg: int) -> tuple[float, dict[int, float]]:
    per = {}
    for k in range(scores.shape[1]):
        rows = keep[:, k]
        pos = int(targets[rows, k].sum())
        if pos >= min_pos and int(rows.sum()) - pos >= min_neg:
            _, one = macro_auroc(scores[rows, k], targets[rows, k])
            per[k] = one[0]
    return (sum(per.values()) / len(per) if per else float("nan")), per


def text_finding_metrics(scores: Tensor, data: TextFindingSet, min_positives: int = MIN_POSITIVES) -> dict:
    """Macro AUROCs (see the module docstring) and the per-finding AUROC behind them."""
    present = data.present
    detect, per_detect = _macro(scores, present.clamp(min=0), present >= 0, min_positives, 1)
    negation, _ = _macro(scores, present.clamp(min=0), (present == 1) | data.negated, min_positives, MIN_NEGATED)
    return {"auroc": detect, "negation_auroc": negation, "classes_scored": len(per_detect),
            **{f"auroc/{data.finding_names[k]}": v for k, v in per_detect.items()}}


@torch.no_grad()
def embed_texts(model, texts: list[str], device: torch.device, head: bool, batch_size: int = 64) -> Tensor:
    """Each text cleaned into sentences as training cleans reports (lower-case words), then
    through the model's tokenizer and text tower (and its text head when ``head``), exactly
    as the model embeds reports and prompts."""
    from kgvlp.eval.features import prompt_sentences, text_embeddings
    return text_embeddings(model, [prompt_sentences(t) for t in texts], device, batch_size=batch_size,
                           progress=False, head=head)
