"""Sinkhorn-Knopp codes over the global batch (SwAV; MGCA's CPA, MLIP's category swap)."""
from __future__ import annotations

import torch
from torch import Tensor

from kgvlp.modules.distributed import at_least_fp32, gather_no_grad, local_rows, world_size


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float, iterations: int, stable: bool = True) -> Tensor:
    """Sinkhorn-Knopp on (N, K) scores of the whole (global) batch → codes (N, K), rows sum to 1.

    Equal-partition constraint: each prototype receives N/K of the mass, each sample 1.
    Computed in float32 (exp(score/ε) overflows in half precision); ``stable`` subtracts the
    global max first, which leaves the result unchanged since Q is renormalised.
    """
    logits = at_least_fp32(scores) / epsilon
    if stable:
        logits = logits - logits.max()
    q = torch.exp(logits).t()                      # (K, N)
    num_prototypes, num_samples = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= num_samples
    return (q * num_samples).t()                   # (N, K)


@torch.no_grad()
def batch_codes(scores: Tensor, epsilon: float, iterations: int, gather: bool, stable: bool = True) -> Tensor:
    """This rank's rows of the codes of the global batch's (N, K) scores (``gather``), or of
    this rank's batch alone."""
    if not gather or world_size() == 1:
        return sinkhorn(scores, epsilon, iterations, stable=stable)
    everything = gather_no_grad(scores.detach())
    return sinkhorn(everything, epsilon, iterations, stable=stable)[local_rows(everything, scores.shape[0])]
