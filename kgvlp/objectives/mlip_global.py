"""MLIP global image–text contrast with divergence (momentum) encoders.

v, t: online image/report embeddings; v′, t′: divergence embeddings (no gradient, view 2);
Q_v, Q_t: optional queues of earlier v′, t′. Over the global batch (columns gathered from
all ranks, rows = this rank's anchors), with InfoNCE(a, C) = CE(a·Cᵀ/τ, own column):

  L_oo = ½[InfoNCE(v, T)        + InfoNCE(t, V)]          online ↔ online
  L_id = ½[InfoNCE(v, [T′; Q_t]) + InfoNCE(t′, V)]         online image ↔ divergence text
  L_di = ½[InfoNCE(t, [V′; Q_v]) + InfoNCE(v′, T)]         divergence image ↔ online text

The paper states only "global contrastive learning with divergence encoders"; the three
pairings, τ and the weights are ours (docs/mlip.md). ``distill_alpha`` > 0 replaces the
one-hot targets of online anchors by α·softmax(divergence similarities) + (1 − α)·one-hot
(ALBEF's momentum distillation, α = 0.4 there).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kgvlp.models.features import Need
from kgvlp.modules.distributed import at_least_fp32, gather_no_grad, gather_with_grad, rank
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

    def _targets(self, local: int, columns: int, offset: int, teacher: Tensor | None, device) -> Tensor:
        onehot = F.one_hot(torch.arange(local, device=device) + offset, columns).float()
        if teacher is None or self.cfg.distill_alpha <= 0:
            return onehot
        alpha = self.cfg.distill_alpha
        return alpha * F.softmax(at_least_fp32(teacher), dim=1) + (1 - alpha) * onehot

    def _info_nce(self, anchors: Tensor, columns: Tensor, offset: int, mask: Tensor | None = None,
                  teacher: Tensor | None = None) -> Tensor:
        logits = anchors @ columns.t() / self.cfg.temperature
        if mask is not None:
            logits = logits + mask
            teacher = None if teacher is None else teacher + mask
        targets = self._targets(anchors.shape[0], columns.shape[0], offset, teacher, anchors.device)
        return soft_cross_entropy(logits, targets)

    def forward(self, features, batch, ctx):
        cfg = self.cfg
        image, text = features.image_embed, features.text_embed
        divergence = features.extras[Need.DIVERGENCE.value]
        div_image, div_text = divergence.image_embed.to(image.dtype), divergence.text_embed.to(text.dtype)
        local = image.shape[0]
        gather = cfg.gather
        all_image = gather_with_grad(image) if gather else image
        all_text = gather_with_grad(text) if gather else text
        all_div_image = gather_no_grad(div_image) if gather else div_image
        all_div_text = gather_no_grad(div_text) if gather else div_text
        offset = rank() * local if gather else 0
        tau = cfg.temperature
        # Teacher similarities (ALBEF): divergence anchor vs divergence columns (+ queue).
        teach_i2t = div_image @ all_div_text.t() / tau
        teach_t2i = div_text @ all_div_image.t() / tau
        terms: dict[str, Tensor] = {}
        if cfg.online_online_weight > 0:
            terms["online_online"] = cfg.online_online_weight * 0.5 * (
                self._info_nce(image, all_text, offset, teacher=teach_i2t)
                + self._info_nce(text, all_image, offset, teacher=teach_t2i))
        if cfg.image_divergence_weight > 0:
            columns, mask = with_queue(all_div_text, divergence.queue_text, divergence.queue_valid)
            teacher = div_image @ columns.t() / tau
            terms["image_divergence"] = cfg.image_divergence_weight * 0.5 * (
                self._info_nce(image, columns, offset, mask, teacher)
                + self._info_nce(div_text, all_image, offset, teacher=teach_t2i))
        if cfg.divergence_image_weight > 0:
            columns, mask = with_queue(all_div_image, divergence.queue_image, divergence.queue_valid)
            teacher = div_text @ columns.t() / tau
            terms["divergence_image"] = cfg.divergence_image_weight * 0.5 * (
                self._info_nce(text, columns, offset, mask, teacher)
                + self._info_nce(div_image, all_text, offset, teacher=teach_i2t))
        with torch.no_grad():
            targets = torch.arange(local, device=image.device) + offset
            accuracy = ((image @ all_div_text.t()).argmax(1) == targets).float().mean()
        return ObjectiveOutput(terms=terms, metrics={"acc_i2divt": accuracy})
