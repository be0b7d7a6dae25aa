"""Zero-shot classification from prompts, and image↔report retrieval, in the shared space.

Both read the 128-d shared projections, so both need a model trained with a global
image–text objective (ITA); a model without ``projections`` is skipped with that reason.

Zero-shot: each class k has positive prompts ("there is pleural effusion") and, with
``negated``, negated prompts ("no pleural effusion"); prompts of one kind are embedded,
averaged and renormalised (CLIP's prompt ensembling). The class score is the cosine to the
positive prompt, or its margin over the negated one, which ranks images exactly as the
softmax over {positive, negated} does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kgvlp.eval.metrics import accuracy, macro_auroc, recall_at_k

POSITIVE_TEMPLATES = ("{}.", "there is {}.", "findings consistent with {}.")
NEGATED_TEMPLATES = ("no {}.", "there is no {}.", "no evidence of {}.")


def class_phrases(label_names: list[str]) -> list[str]:
    """Words a report uses for each label: SynthCXR's own finding texts, else the label
    name in lower case with underscores as spaces (CheXpert, RSNA, COVIDx names read so)."""
    from kgvlp.data.synth.findings import FINDINGS
    synth = {f.name: f.text for f in FINDINGS}
    return [synth.get(name, name.replace("_", " ").lower()) for name in label_names]


def prompts(label_names: list[str], templates: tuple[str, ...]) -> list[list[list[str]]]:
    """[class][template] → one report (a list of one cleaned sentence)."""
    from kgvlp.eval.features import prompt_sentences
    return [[prompt_sentences(t.format(p)) for t in templates] for p in class_phrases(label_names)]


def class_embeddings(embed_reports, label_names: list[str], templates: tuple[str, ...]) -> Tensor:
    """(K, 128): each class's prompts embedded with ``embed_reports`` (reports → (N, 128)),
    averaged and renormalised."""
    grouped = prompts(label_names, templates)
    flat = [report for group in grouped for report in group]
    embedded = embed_reports(flat).reshape(len(grouped), len(templates), -1)
    return F.normalize(embedded.mean(dim=1), dim=-1)


def zero_shot_scores(image_embed: Tensor, positive: Tensor, negative: Tensor | None) -> Tensor:
    """(N, K) class scores: cos(image, positive) [− cos(image, negated)]."""
    scores = F.normalize(image_embed, dim=-1) @ positive.T
    if negative is not None:
        scores = scores - F.normalize(image_embed, dim=-1) @ negative.T
    return scores


def zero_shot_metrics(scores: Tensor, labels: Tensor, multiclass: bool, label_names: list[str] | None = None,
                      held_out: tuple[str, ...] = ()) -> dict[str, float]:
    """Macro AUROC (accuracy for multi-class), per class as ``auroc/<label>`` when
    ``label_names`` are given, and — for labels ``held_out`` of every training report
    (SynthCXR's data.synth.omit_from_reports) — ``auroc_held_out`` over those and
    ``auroc_seen`` over the rest."""
    if multiclass:
        return {"accuracy": accuracy(scores, labels.argmax(dim=1))}
    macro, per_class = macro_auroc(scores, labels)
    out = {"auroc": macro, "classes_scored": len(per_class)}
    if label_names is None:
        return out
    out.update({f"auroc/{label_names[k]}": v for k, v in per_class.items()})
    if held_out:
        unknown = sorted(set(held_out) - set(label_names))
        if unknown:
            raise ValueError(f"held-out findings {unknown} are not labels of the dataset ({', '.join(label_names)})")
        held = [v for k, v in per_class.items() if label_names[k] in held_out]
        seen = [v for k, v in per_class.items() if label_names[k] not in held_out]
        out["auroc_held_out"] = sum(held) / len(held) if held else float("nan")
        out["auroc_seen"] = sum(seen) / len(seen) if seen else float("nan")
    return out


def report_positives(reports: list[list[str]]) -> Tensor:
    """(N, N) bool: report j is a correct answer for item i when its text equals report i's
    (SynthCXR and real corpora repeat normal reports word for word)."""
    texts = [" ".join(r) for r in reports]
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    codes = torch.tensor([ids[t] for t in texts])
    return codes[:, None] == codes[None, :]


def retrieval_metrics(image_embed: Tensor, text_embed: Tensor, positives: Tensor,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    similarity = F.normalize(image_embed, dim=-1) @ F.normalize(text_embed, dim=-1).T
    # R@1 of a random ranking: the share of reports that are correct answers, per item
    out = {"chance_R@1": float(positives.float().mean(dim=1).mean())}
    for direction, sim, pos in (("i2t", similarity, positives), ("t2i", similarity.T, positives.T)):
        for k, value in recall_at_k(sim, pos, ks).items():
            out[f"{direction}_R@{k}"] = value
    return out
