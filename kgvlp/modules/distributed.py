"""The one place objectives cross ranks. Everything that must see the global batch
(contrastive negatives, Sinkhorn, bank writes) goes through these helpers, so a two-rank
run equals one process on the concatenated batch."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order); gradients flow back to
    each rank's own rows (torch.distributed.nn's differentiable all_gather)."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, no gradient (codes, bank writes).
    Every rank must pass the same shape."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def local_rows(global_tensor: Tensor, local_size: int) -> slice:
    """The rows of this rank inside a gathered tensor (equal batch sizes per rank)."""
    start = rank() * local_size
    return slice(start, start + local_size)


def all_reduce_sum(x: Tensor) -> Tensor:
    if world_size() > 1:
        dist.all_reduce(x)
    return x


@contextlib.contextmanager
def modifiable(*params: torch.nn.Parameter):
    """Context in which parameters may be changed in place outside forward (e.g. prototype
    renormalisation in ``after_step``). Under ZeRO-3 it gathers the partitions and writes
    rank 0's values back; otherwise it does nothing."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(params), modifier_rank=0):
            yield
    else:
        yield


def at_least_fp32(x: Tensor) -> Tensor:
    """Upcast half/bf16 to float32 for softmax, exp and statistics; float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def step_generator(ctx, device, salt: int) -> torch.Generator:
    """A generator seeded by (salt, step, rank): draws are reproducible and resume-exact."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(salt) * 1_000_003 + int(ctx.step) * 4_099 + rank())
    return generator
