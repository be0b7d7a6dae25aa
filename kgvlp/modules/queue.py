"""A feature queue / memory bank synchronised across ranks (MoCo queue; PRIOR/MLIP banks).

Writes happen in ``after_step`` from features gathered over all ranks, so every rank holds
the same queue and a two-rank run equals one process on the concatenated batch. The queue
and its pointer are buffers: they survive checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.modules.distributed import gather_no_grad


class FeatureQueue(nn.Module):
    def __init__(self, size: int, dim: int, normalise: bool = True):
        super().__init__()
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.normalise = normalise
        self._pending: Tensor | None = None

    def stage(self, local_features: Tensor) -> None:
        """Remember this step's features (called in forward); written in ``commit``."""
        self._pending = local_features.detach()

    @torch.no_grad()
    def commit(self) -> None:
        """Write the staged features of all ranks, oldest first (called in after_step)."""
        if self._pending is None:
            return
        new = gather_no_grad(self._pending).to(self.features.dtype)
        if self.normalise:
            new = F.normalize(new, dim=-1)
        size = self.features.shape[0]
        new = new[-size:]
        positions = (self.pointer + torch.arange(new.shape[0], device=new.device)) % size
        self.features[positions] = new
        self.pointer.copy_((self.pointer + new.shape[0]) % size)
        self.filled.copy_(torch.clamp(self.filled + new.shape[0], max=size))
        self._pending = None
