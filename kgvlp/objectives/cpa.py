"""MGCA cross-modal prototype alignment (CPA): Sinkhorn-Knopp codes, swapped prediction.

score = z·Cᵀ with K prototypes C (rows L2-normalised); codes q = Sinkhorn(exp(score/ε))
over the global batch; p = softmax(score/τ₃);  L = ½[−Σ q_img log p_txt − Σ q_txt log p_img]
(MGCA eq. 7–9, SwAV's swapped prediction).

Metric ``prototypes_used``: prototypes that are the top code of at least one of this rank's
images (the trainer averages it over ranks at log time; no collective in the step for it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.modules.distributed import at_least_fp32, modifiable
from kgvlp.modules.sinkhorn import batch_codes
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class CPAConfig(ObjectiveConfig):
    num_prototypes: int = 500      # K, MGCA
    epsilon: float = 0.05          # Sinkhorn ε
    sinkhorn_iterations: int = 3
    temperature: float = 0.2       # τ₃
    freeze_prototypes_epochs: float = 1.0  # prototypes get no gradient during the first epoch
    gather: bool = True            # Sinkhorn over the global batch (official: per GPU)
    official_quirks: bool = False  # exp(score/ε) without max-subtraction; per-GPU Sinkhorn; float32 codes


class Prototypes(nn.Linear):
    """K prototype rows (``prototypes.weight``, nn.Linear's init and state-dict key); the
    scores are computed in this module's own forward because ZeRO-3 gathers a parameter
    only around a forward of the module that owns it — reading ``.weight`` from the
    objective's forward saw an empty partition. ``frozen``: zero gradient, not None, so
    every rank reduces the same parameters and Adam's moments stay at zero."""

    def forward(self, embeds: Tensor, frozen: bool = False) -> Tensor:
        weight = self.weight.detach() + 0.0 * self.weight if frozen else self.weight
        return embeds @ weight.t()


class CPA(Objective):
    Config = CPAConfig
    requires = frozenset({Need.IMAGE_EMBED, Need.TEXT_EMBED})

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        self.prototypes = Prototypes(dims.embed_dim, cfg.num_prototypes, bias=False)
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def _codes(self, scores: Tensor) -> Tensor:
        quirks = self.cfg.official_quirks
        codes = batch_codes(scores, self.cfg.epsilon, self.cfg.sinkhorn_iterations,
                            gather=self.cfg.gather and not quirks, stable=not quirks)
        # The official Sinkhorn returns ``.float()`` (mgca_module.py:291): in float64 the
        # codes are rounded to float32 (relative 6e-8); in float32 training nothing changes.
        return codes.float() if quirks else codes

    def forward(self, features, ctx):
        # The first epoch's prototypes are frozen (renormalisation undoes weight decay).
        frozen = ctx.epoch < self.cfg.freeze_prototypes_epochs
        image_scores = self.prototypes(features.image_embed, frozen)
        text_scores = self.prototypes(features.text_embed, frozen)
        image_codes = self._codes(image_scores)
        text_codes = self._codes(text_scores)
        log_p_image = F.log_softmax(at_least_fp32(image_scores) / self.cfg.temperature, dim=1)
        log_p_text = F.log_softmax(at_least_fp32(text_scores) / self.cfg.temperature, dim=1)
        loss = 0.5 * (-(image_codes * log_p_text).sum(1).mean() - (text_codes * log_p_image).sum(1).mean())
        with torch.no_grad():
            used = torch.zeros(self.cfg.num_prototypes, device=image_scores.device)
            used[image_codes.argmax(1)] = 1.0
            used_prototypes = used.sum()
        return ObjectiveOutput(terms={"cpa": loss}, metrics={"prototypes_used": used_prototypes})

    @torch.no_grad()
    def after_step(self, ctx):
        # Official code renormalises the prototype rows in place before each forward; doing
        # it once after each optimizer step gives the same values at every forward.
        with modifiable(self.prototypes.weight):
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
