"""The numbers every evaluation reports, each a small function on plain tensors.

Classification metrics come from torchmetrics (the same implementation the papers' code
uses through Lightning); Recall@K, Dice and the pointing game are a few lines each and are
written out here so their conventions are visible.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import (binary_auroc, multiclass_accuracy)


def macro_auroc(scores: Tensor, targets: Tensor) -> tuple[float, dict[int, float]]:
    """Macro AUROC over the columns of a multi-label problem.

    scores, targets: (N, K). A class whose targets are all 0 or all 1 has no AUROC and is
    left out of the mean (torchmetrics would score it 0 and drag the mean down); the per
    class dict holds only the classes that were scored. Returns (macro, {class: auroc}).
    A binary problem is the K = 1 case.
    """
    scores, targets = scores.float().cpu(), targets.long().cpu()
    if scores.ndim == 1:
        scores, targets = scores[:, None], targets[:, None]
    per_class = {}
    for k in range(scores.shape[1]):
        positives = int(targets[:, k].sum())
        if 0 < positives < targets.shape[0]:
            per_class[k] = float(binary_auroc(scores[:, k], targets[:, k]))
    macro = sum(per_class.values()) / len(per_class) if per_class else float("nan")
    return macro, per_class


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy of a multi-class problem: logits (N, K), targets (N,) class indices."""
    num_classes = logits.shape[1]
    return float(multiclass_accuracy(logits.float().cpu(), targets.long().cpu(),
                                     num_classes=num_classes, average="micro"))


def recall_at_k(similarity: Tensor, positives: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries with at least one positive among their top-K gallery items.

    similarity: (Q, G) scores, higher = closer; positives: (Q, G) bool, which gallery items
    count as a correct answer for each query (the paired item, and any item with the
    identical text). Ties are broken by gallery index (stable sort).
    """
    order = torch.sort(similarity.float(), dim=1, descending=True, stable=True).indices
    ranked_positive = torch.gather(positives.bool(), 1, order)
    return {k: float(ranked_positive[:, :k].any(dim=1).float().mean()) for k in ks}


def dice_scores(predicted: Tensor, target: Tensor) -> Tensor:
    """Dice 2|P∩G| / (|P| + |G|) per (image, class): predicted/target (N, K, H, W) bool → (N, K).
    Both empty counts as 1 (nothing to find, nothing found)."""
    predicted, target = predicted.bool(), target.bool()
    intersection = (predicted & target).flatten(2).sum(-1).float()
    total = predicted.flatten(2).sum(-1).float() + target.flatten(2).sum(-1).float()
    return torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.ones_like(total))


def dice_summary(predicted: Tensor, target: Tensor) -> dict[str, float]:
    """``dice``: mean Dice over (image, class) pairs whose ground truth is not empty (what a
    finding's segmentation quality means); ``dice_all``: mean over all pairs, empty = 1."""
    scores = dice_scores(predicted, target)
    present = target.bool().flatten(2).any(-1)
    return {"dice": float(scores[present].mean()) if present.any() else float("nan"),
            "dice_all": float(scores.mean())}


def pointing_hits(attention: Tensor, coverage: Tensor) -> Tensor:
    """Pointing game: does each attention map peak on a cell the target covers?

    attention: (M, P) non-negative scores over P patches; coverage: (M, P) fraction of each
    patch inside the target mask. A hit = the arg-max patch (first one on ties) has
    coverage > 0. Returns (M,) bool.
    """
    peak = attention.argmax(dim=1)
    return coverage.gather(1, peak[:, None])[:, 0] > 0


def mean_average_precision(predictions: list[dict], targets: list[dict],
                           iou_thresholds: list[float] | None = None) -> dict[str, float]:
    """COCO-style mAP (torchmetrics, pycocotools backend). Each prediction dict holds
    ``boxes`` (n, 4) xyxy, ``scores`` (n,), ``labels`` (n,); each target ``boxes``/``labels``.
    Default thresholds are MGCA's 0.4:0.05:0.75."""
    from torchmetrics.detection import MeanAveragePrecision
    if iou_thresholds is None:
        iou_thresholds = [round(0.4 + 0.05 * i, 2) for i in range(8)]
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=iou_thresholds)
    metric.update([{k: v.detach().cpu() for k, v in p.items()} for p in predictions],
                  [{k: v.detach().cpu() for k, v in t.items()} for t in targets])
    result = metric.compute()
    out = {"map": float(result["map"])}
    if 0.5 in iou_thresholds:
        out["map_50"] = float(result["map_50"])
    return out
