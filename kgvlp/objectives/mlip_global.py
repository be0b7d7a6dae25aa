"""MLIP global image–text contrast with divergence (momentum) encoders.

v, t: online image/report embeddings; v′, t′: divergence embeddings (no gradient, view 2);
Q_v, Q_t: optional queues of earlier v′, t′. Over the global batch (columns gathered from
all ranks, rows = this rank's anchors), with InfoNCE(a, C) = CE(a·Cᵀ/τ, own column):

  L_oo = ½[InfoNCE(v, T)        + InfoNCE(t, V)]          online ↔ online
  L_id = ½[InfoNCE(v, [T′; Q_t]) + InfoNCE(t′, V)]         online image ↔ divergence text
  L_di = ½[InfoNCE(t, [V′; Q_v]) + InfoNCE(v′, T)]         divergence image ↔ online text

The paper states only "global contrastive learning with divergence encoders"; the three
pairings, τ and the weights are ours (docs/mlip.md); each pairing is a raw term, its
``*_weight`` applied by the ObjectiveSet (``term_weights``). ``distill_alpha`` > 0 replaces the
one-hot targets of online anchors by α·softmax(divergence similarities) + (1 − α)·one-hot
(ALBEF's momentum distillation, α = 0.4 there).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kgvlp.models.features import Need
from kgvlp.modules.contrastive import columns, own_columns
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class MLIPGlobalConfig(ObjectiveConfig):
    temperature: float = 0.07          # ours (= MGCA's τ₁)
    online_online_weight: float = 1.0  # ours; 0 when ITA already contrasts online ↔ online
    image_divergence_weight: float = 1.0   # online image ↔ divergence text (ours)
    divergence_image_weight: float = 1.0   # divergence image ↔ online text (ours)
    distill_alpha: float = 0.0         # ALBEF soft targets; 0 = off (ours), ALBEF 0.4
    gather: bool = True                # negatives from the global batch


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of −Σ targets · log softmax(logits); -inf logits have zero target."""
    log_p = F.log_softmax(at_least_fp32(logits), dim=1)
    return -(targets * log_p.masked_fill(torch.isinf(log_p), 0.0)).sum(1).mean()


def with_queue(columns: Tensor, queue: Tensor | None, valid: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Columns followed by the queue; a (columns,) additive mask hiding unfilled slots."""
    if queue is None:
        return columns, None
    mask = torch.cat([torch.zeros(columns.shape[0], device=columns.device),
                      torch.where(valid, 0.0, float("-inf")).to(columns.device)])
    return torch.cat([columns, queue.to(columns.dtype)]), mask


class MLIPGlobal(Objective):
    Config = MLIPGlobalConfig
    requires = frozenset({Need.IMAGE_EMBED, Need.TEXT_EMBED, Need.DIVERGENCE})
    term_weights = {"online_online": "online_online_weight", "image_divergence": "image_divergence_weight",
                    "divergence_image": "divergence_image_weight"}

    def _targets(self, positives: Tensor, num_columns: int, teacher: Tensor | None) -> Tensor:
        onehot = F.one_hot(positives, num_columns).float()
        if teacher is None or self.cfg.distill_alpha <= 0:
            return onehot
        alpha = self.cfg.distill_alpha
        return alpha * F.softmax(at_least_fp32(teacher), dim=1) + (1 - alpha) * onehot

    def _info_nce(self, anchors: Tensor, candidates: Tensor, positives: Tensor, mask: Tensor | None = None,
                  teacher: Tensor | None = None) -> Tensor:
        logits = anchors @ candidates.t() / self.cfg.temperature
        if mask is not None:
            logits = logits + mask
            teacher = None if teacher is None else teacher + mask
        return soft_cross_entropy(logits, self._targets(positives, candidates.shape[0], teacher))

    def forward(self, features, ctx):
        cfg = self.cfg
        image, text = features.image_embed, features.text_embed
        divergence = features.extras[Need.DIVERGENCE.value]
        div_image, div_text = divergence.image_embed.to(image.dtype), divergence.text_embed.to(text.dtype)
        gather = cfg.gather
        all_image, all_text = columns(image, gather), columns(text, gather)
        all_div_image, all_div_text = columns(div_image, gather, grad=False), columns(div_text, gather, grad=False)
        positives = own_columns(image.shape[0], gather, image.device)
        tau = cfg.temperature
        # Teacher similarities (ALBEF): divergence anchor vs divergence columns (+ queue).
        teach_i2t = div_image @ all_div_text.t() / tau
        teach_t2i = div_text @ all_div_image.t() / tau
        terms: dict[str, Tensor] = {}
        if cfg.online_online_weight > 0:
            terms["online_online"] = 0.5 * (self._info_nce(image, all_text, positives, teacher=teach_i2t)
                                            + self._info_nce(text, all_image, positives, teacher=teach_t2i))
        if cfg.image_divergence_weight > 0:
            candidates, mask = with_queue(all_div_text, divergence.queue_text, divergence.queue_valid)
            teacher = div_image @ candidates.t() / tau
            terms["image_divergence"] = 0.5 * (self._info_nce(image, candidates, positives, mask, teacher)
                                               + self._info_nce(div_text, all_image, positives, teacher=teach_t2i))
        if cfg.divergence_image_weight > 0:
            candidates, mask = with_queue(all_div_image, divergence.queue_image, divergence.queue_valid)
            teacher = div_text @ candidates.t() / tau
            terms["divergence_image"] = 0.5 * (self._info_nce(text, candidates, positives, mask, teacher)
                                               + self._info_nce(div_image, all_text, positives, teacher=teach_i2t))
        with torch.no_grad():
            accuracy = ((image @ all_div_text.t()).argmax(1) == positives).float().mean()
        return ObjectiveOutput(terms=terms, metrics={"acc_i2divt": accuracy})
