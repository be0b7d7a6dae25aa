"""Pieces shared by PRIOR's objectives: CLIP's InfoNCE with a learnable logit scale, and
the sentences an objective reads (the encoder's, or the bank's prototypes in some stages)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Features, Need
from kgvlp.models.text import sentence_means
from kgvlp.modules.distributed import at_least_fp32, gather_with_grad, modifiable, rank


class LogitScale(nn.Module):
    """CLIP's learnable inverse temperature: stored as log(1/τ), initialised at 1/``init``;
    ``clamp()`` (called in after_step) caps it at ``maximum`` as CLIP does (PRIOR: no cap)."""

    def __init__(self, init_temperature: float, maximum: float | None = 100.0):
        super().__init__()
        # shape (1,): DeepSpeed's broadcast of parameters cannot take 0-dim tensors
        self.log_scale = nn.Parameter(torch.full((1,), math.log(1.0 / init_temperature)))
        self.maximum = maximum

    def forward(self) -> Tensor:
        return self.log_scale.exp()[0]

    @torch.no_grad()
    def clamp(self) -> None:
        if self.maximum is not None:
            with modifiable(self.log_scale):
                self.log_scale.clamp_(0.0, math.log(self.maximum))


def clip_loss(a: Tensor, b: Tensor, scale: Tensor, gather: bool = True) -> Tensor:
    """½[CE(s·a·Bᵀ, I) + CE(s·b·Aᵀ, I)] with a, b L2-normalised; local rows against the
    columns of the global batch (open_clip's local_loss), so the data-parallel mean of the
    ranks' losses is the loss of one process on the concatenated batch."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    all_a = gather_with_grad(a) if gather else a
    all_b = gather_with_grad(b) if gather else b
    targets = torch.arange(a.shape[0], device=a.device) + (rank() * a.shape[0] if gather else 0)
    loss_a = F.cross_entropy(at_least_fp32(scale * a @ all_b.t()), targets)
    loss_b = F.cross_entropy(at_least_fp32(scale * b @ all_a.t()), targets)
    return (loss_a + loss_b) / 2


def uses_bank(prototype_stages: list[str]) -> frozenset[Need]:
    return frozenset({Need.PROTOTYPE_BANK}) if prototype_stages else frozenset()


def report_sentences(features: Features, slots: int, prototype_stages: list[str],
                     stage: str) -> tuple[Tensor, Tensor]:
    """(B, S, D) sentence features and (B, S) mask: the bank's soft prototypes during
    ``prototype_stages`` (PRIOR stages 2–3 align prototypes), else the encoder's."""
    if stage in prototype_stages:
        view = features.extras[Need.PROTOTYPE_BANK.value]
        return view.prototypes, view.mask
    if Need.PROTOTYPE_BANK.value in features.extras:
        view = features.extras[Need.PROTOTYPE_BANK.value]
        return view.sentences, view.mask
    return sentence_means(features.text_tokens, features.token_sentence_index, slots)
