"""MLIP knowledge-guided category-level contrast.

Categories come from knowledge: the KnowledgeBank clusters the embeddings of finding
concepts with faiss k-means (K centroids c_k); here prototypes P_k = normalise(A·proj(c_k))
live in the shared 128-d space (A trainable, proj = the bank's projection). With
z ∈ {v, t} (online image/report embeddings) and scores s = z·Pᵀ:

  swap:      Sinkhorn codes q (global batch, as MGCA's CPA) must agree across modalities,
             ½[−Σ q_v log p_t − Σ q_t log p_v],  p = softmax(s/τ_p)
  knowledge: both modalities must predict the report's knowledge category distribution y
             (uniform over the categories of its affirmed finding concepts; reports without
             any are skipped), ½[−Σ y log p_v − Σ y log p_t]
  instance:  InfoNCE v ↔ t over the global batch in which pairs whose finding-concept sets
             have Jaccard ≥ threshold are removed from the negatives (``remove``) or are
             soft positives with target ∝ Jaccard (``soft``); identical sets (incl. two
             empty sets) are never negatives.

The paper says only "prototype clustering guided by expert knowledge … contrast at the
category level to mitigate false negatives"; this decomposition is ours (docs/mlip.md).
Terms are raw; their ``*_weight`` is applied by the ObjectiveSet (``term_weights``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.modules.contrastive import columns, global_masked_mean, own_columns
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.modules.knowledge_bank import set_jaccard
from kgvlp.modules.sinkhorn import batch_codes
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class CategoryContrastConfig(ObjectiveConfig):
    temperature: float = 0.2           # τ_p, ours (= MGCA's CPA τ₃)
    epsilon: float = 0.05              # Sinkhorn ε (as CPA)
    sinkhorn_iterations: int = 3
    swap_weight: float = 1.0           # ours
    knowledge_weight: float = 1.0      # ours
    instance_weight: float = 1.0       # ours
    instance_temperature: float = 0.07
    jaccard_threshold: float = 0.5     # ours: pairs at or above are not negatives
    false_negatives: Literal["remove", "soft"] = "remove"  # remove | soft
    empty_sets_match: bool = True      # two reports without affirmed findings share a "category"
    gather: bool = True


class CategoryContrast(Objective):
    Config = CategoryContrastConfig
    requires = frozenset({Need.IMAGE_EMBED, Need.TEXT_EMBED, Need.ENTITIES})
    term_weights = {"swap": "swap_weight", "knowledge": "knowledge_weight", "instance": "instance_weight"}

    def __init__(self, cfg: CategoryContrastConfig, dims):
        super().__init__(cfg, dims)
        if cfg.false_negatives not in ("remove", "soft"):
            raise ValueError(f"category_contrast.false_negatives {cfg.false_negatives!r}: remove | soft")
        self.prototype_map = nn.Linear(dims.text_width, dims.embed_dim)

    def _codes(self, scores: Tensor) -> Tensor:
        return batch_codes(scores, self.cfg.epsilon, self.cfg.sinkhorn_iterations, self.cfg.gather)

    def knowledge_targets(self, entities, num_categories: int) -> tuple[Tensor, Tensor]:
        """(B, K) distribution over the categories of each report's affirmed finding concepts,
        and (B,) whether the report has any."""
        keep = entities.affirmed & entities.finding & (entities.category >= 0)
        hits = F.one_hot(entities.category.clamp(min=0), num_categories).float() * keep[..., None]
        present = (hits.sum(1) > 0).float()
        total = present.sum(1, keepdim=True)
        return present / total.clamp(min=1), total[:, 0] > 0

    def instance_rows(self, image: Tensor, text: Tensor, entities) -> tuple[Tensor, Tensor, Tensor]:
        """Per-anchor losses image→text and text→image (B,) and the (B, B_global) pairs that
        are not negatives (finding sets with Jaccard ≥ threshold, identical sets included)."""
        cfg, gather = self.cfg, self.cfg.gather
        keep = entities.affirmed & entities.finding
        all_image, all_text = columns(image, gather), columns(text, gather)
        all_ids, all_keep = columns(entities.ids, gather, grad=False), columns(keep, gather, grad=False)
        positive = own_columns(image.shape[0], gather, image.device)
        is_self = F.one_hot(positive, all_ids.shape[0]).bool()
        jaccard = set_jaccard(entities.ids, keep, all_ids, all_keep, cfg.empty_sets_match)
        similar = (jaccard >= cfg.jaccard_threshold) & ~is_self
        if cfg.false_negatives == "remove":
            targets, blocked = is_self.float(), similar
        else:
            targets = is_self.float() + jaccard * similar
            targets, blocked = targets / targets.sum(1, keepdim=True), torch.zeros_like(similar)

        def side(anchors: Tensor, columns: Tensor) -> Tensor:
            logits = at_least_fp32(anchors @ columns.t() / cfg.instance_temperature)
            log_p = F.log_softmax(logits.masked_fill(blocked, float("-inf")), dim=1)
            return -(targets * log_p.masked_fill(blocked, 0.0)).sum(1)

        return side(image, all_text), side(text, all_image), similar

    def forward(self, features, ctx):
        cfg = self.cfg
        entities = features.extras[Need.ENTITIES.value]
        image, text = features.image_embed, features.text_embed
        prototypes = F.normalize(self.prototype_map(entities.category_vectors), dim=-1).to(image.dtype)
        image_scores, text_scores = image @ prototypes.t(), text @ prototypes.t()
        log_p_image = F.log_softmax(at_least_fp32(image_scores) / cfg.temperature, dim=1)
        log_p_text = F.log_softmax(at_least_fp32(text_scores) / cfg.temperature, dim=1)
        terms: dict[str, Tensor] = {}
        if cfg.swap_weight > 0:
            image_codes, text_codes = self._codes(image_scores), self._codes(text_scores)
            terms["swap"] = 0.5 * (-(image_codes * log_p_text).sum(1).mean()
                                   - (text_codes * log_p_image).sum(1).mean())
        if cfg.knowledge_weight > 0:
            target, has = self.knowledge_targets(entities, prototypes.shape[0])
            per_report = -0.5 * ((target * log_p_image).sum(1) + (target * log_p_text).sum(1))
            terms["knowledge"] = global_masked_mean(per_report, has, cfg.gather)
        metrics = {}
        if cfg.instance_weight > 0:
            image_rows, text_rows, similar = self.instance_rows(image, text, entities)
            terms["instance"] = 0.5 * (image_rows.mean() + text_rows.mean())
            metrics["non_negatives_per_row"] = similar.float().sum(1).mean()
        with torch.no_grad():
            metrics["agreement"] = (image_scores.argmax(1) == text_scores.argmax(1)).float().mean()
        return ObjectiveOutput(terms=terms, metrics=metrics)
