"""Contrastive pieces shared by objectives: the global batch's columns and each local row's
own column in it (open_clip's local loss), CLIP's InfoNCE with a learnable logit scale, and
a mean over a mask counted over all ranks.

Local rows against global columns: each rank's mean over its own rows, averaged by data
parallelism, is the mean over the global batch, so a two-rank run equals one process on
the concatenated batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.modules.distributed import (all_reduce_sum, at_least_fp32, gather_no_grad, gather_with_grad,
                                      modifiable, rank, world_size)


def columns(x: Tensor, gather: bool, grad: bool = True) -> Tensor:
    """The columns an anchor is compared with: ``x`` of every rank (rank order) when
    ``gather``, else this rank's own; ``grad`` keeps gradients to each rank's rows."""
    if not gather:
        return x
    return gather_with_grad(x) if grad else gather_no_grad(x)


def own_columns(local: int, gather: bool, device) -> Tensor:
    """(local,) index of each local row's own column among ``columns(…, gather)``."""
    return torch.arange(local, device=device) + (rank() * local if gather else 0)


def global_masked_mean(values: Tensor, mask: Tensor, global_count: bool) -> Tensor:
    """Σ values·mask / (number of True in mask over all ranks); × world so that averaging
    over ranks (data parallelism) gives the mean over the global batch."""
    mask = mask.to(values.dtype)
    count = mask.sum().detach().clone()
    scale = 1.0
    if global_count and world_size() > 1:
        count = all_reduce_sum(count)
        scale = float(world_size())
    return scale * (values * mask).sum() / count.clamp(min=1.0)


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
    """½[CE(s·a·Bᵀ, I) + CE(s·b·Aᵀ, I)] with a, b L2-normalised, local rows against the
    columns of the global batch."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    all_a, all_b = columns(a, gather), columns(b, gather)
    targets = own_columns(a.shape[0], gather, a.device)
    loss_a = F.cross_entropy(at_least_fp32(scale * a @ all_b.t()), targets)
    loss_b = F.cross_entropy(at_least_fp32(scale * b @ all_a.t()), targets)
    return (loss_a + loss_b) / 2
