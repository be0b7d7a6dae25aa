"""Gradient accumulation over the configured batch: ``trainer.grad_accum: k`` gives the
objectives all k micro-batches at once, so loss and gradients are those of one batch of
k × ``data.batch_size`` per rank (GradCache, Gao et al. 2021; open_clip's ``accum_freq``).

One optimizer step, for micro-batches x₁ … x_k:

1. cache: fᵢ = encode_samples(xᵢ) without a graph, the RNG state before each recorded;
2. loss: L = objectives(concat(f₁ … f_k)) with a graph from the cached features (made
   leaves) — negatives, Sinkhorn, BatchNorm heads and staged queue/bank writes see the whole
   batch; backward gives the objectives' own parameters their gradients and each cached
   feature its ∂L/∂fᵢ;
3. replay: per micro-batch, the RNG state restored (same dropout, masks, Gumbel draws), fᵢ
   encoded again with a graph and ⟨fᵢ, ∂L/∂fᵢ⟩ backpropagated: the encoders' gradient
   Σᵢ (∂fᵢ/∂θ)ᵀ ∂L/∂fᵢ = ∂L/∂θ.

The encoders' own BatchNorm (CNN backbones) still normalises each micro-batch, and its
running statistics are updated by the replays only (the cached pass leaves them as they
were), as they were k times per step before. The caller owns backward and the step: under
DeepSpeed every backward but the last is off the accumulation boundary, then one step.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kgvlp.models.features import Features


@dataclass
class RandomState:
    """The global CPU and (when used) CUDA generator states: what the encoders draw from."""
    cpu: Tensor
    cuda: Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device) -> "RandomState":
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(cpu=torch.get_rng_state(), cuda=cuda)

    def restore(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)


@contextlib.contextmanager
def norm_statistics_kept(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics as they were before the block (the cached pass, whose
    micro-batches the replays normalise and count again)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{name: buffer.clone() for name, buffer in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, buffers in zip(norms, saved):
                for name, value in buffers.items():
                    norm.get_buffer(name).copy_(value)


def as_leaves(features: Features) -> Features:
    """The cached features detached, floating ones requiring grad (they collect ∂L/∂f)."""
    return features.map_tensors(lambda t: t.detach().requires_grad_(t.is_floating_point()))


def wide(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (sums of many products), float64 stays."""
    return torch.promote_types(dtype, torch.float32)


def replay_loss(features: Features, cached: Features, scale: Tensor) -> Tensor | None:
    """⟨f, ∂L/∂f⟩ over the tensors of a re-encoded micro-batch that carry a graph and whose
    cached copy received a gradient; its backward gives the encoders ∂L/∂θ through this
    micro-batch. ``scale``: the factor the loss's backward was multiplied by (a loss scale),
    removed here because the backward of this sum applies it again. None: nothing to replay."""
    gradients = {path: leaf.grad for path, leaf in cached.tensors() if leaf.grad is not None}
    terms = [(tensor * (gradients[path] / scale).to(tensor.dtype)).sum().to(wide(tensor.dtype))
             for path, tensor in features.tensors() if tensor.requires_grad and path in gradients]
    if not terms:
        return None
    dtype = max((term.dtype for term in terms), key=lambda d: torch.finfo(d).bits)
    return torch.stack([term.to(dtype) for term in terms]).sum()


def accumulate(batches: Sequence, encode: Callable[[object], Features],
               loss_of: Callable[[Features], tuple[Tensor, dict]],
               backward: Callable[[Tensor, bool], None], module: nn.Module,
               device: torch.device) -> tuple[Tensor, dict]:
    """One optimizer step's forward and backward over ``batches`` (see the module doc).

    encode(batch): the per-sample features of one micro-batch; loss_of(features): loss and
    logs of the concatenated features; backward(tensor, last): backpropagate, ``last`` on
    the final call of the step. Returns the loss and logs of the whole batch."""
    states, cached = [], []
    with torch.no_grad(), norm_statistics_kept(module):
        for batch in batches:
            states.append(RandomState.capture(device))
            cached.append(as_leaves(encode(batch)))
    loss, logs = loss_of(Features.concat(cached))
    scale: list[Tensor] = []
    hook = loss.register_hook(lambda grad: scale.append(grad.detach())) if loss.requires_grad else None
    replays = []
    backward(loss, False)
    if hook is not None:
        hook.remove()
    after = RandomState.capture(device)
    factor = scale[0] if scale else torch.ones((), device=loss.device)
    for index, (batch, state, leaves) in enumerate(zip(batches, states, cached)):
        state.restore(device)
        replay = replay_loss(encode(batch), leaves, factor)
        if replay is not None:
            replays.append(index)
            backward(replay, index == len(batches) - 1)
    if not replays or replays[-1] != len(batches) - 1:
        # the boundary backward must still happen (frozen encoders: nothing to replay)
        backward(torch.zeros((), device=loss.device, requires_grad=True), True)
    after.restore(device)
    return loss, logs
