"""EMA (momentum / "divergence") copy of a module: a service for MoCo/ALBEF/MLIP-style objectives.

The copy receives no gradients and has no optimizer state: its parameters are registered as
buffers, so DeepSpeed checkpoints them (and never partitions or optimises them). It is
updated only in ``after_step`` (once per optimizer step, also under gradient accumulation).
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn

from kgvlp.modules.distributed import modifiable


def momentum_at(step: int, max_steps: int, start: float, end: float = 1.0) -> float:
    """Cosine schedule from ``start`` to ``end`` over training (BYOL): m = end − (end − start)(cos(πt/T)+1)/2."""
    progress = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


class EMAModule(nn.Module):
    """Holds a frozen copy of ``online``; ``update(online, momentum)`` does θ' ← mθ' + (1−m)θ.

    The copy stays fp32 when DeepSpeed trains half-precision weights (the transformers/DeepSpeed
    convention below keeps these buffers out of its buffer cast): with m = 0.995 an update
    moves a weight by 0.5% of its distance to the online one, below bf16's resolution, so a
    bf16 copy would stop following. ``compute_like`` runs it in the training dtype.
    """

    _keep_in_fp32_modules_strict = ["shadow"]

    def __init__(self, online: nn.Module):
        super().__init__()
        shadow = copy.deepcopy(online)
        # Parameters → buffers: no gradient, no optimizer state, still in state_dict.
        for module in shadow.modules():
            for name, param in list(module._parameters.items()):
                if param is not None:
                    del module._parameters[name]
                    module.register_buffer(name, param.detach().clone())
        shadow.requires_grad_(False)
        self.shadow = shadow

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.shadow(*args, **kwargs)

    @staticmethod
    def compute_like(dtype: torch.dtype, device: torch.device):
        """Autocast to ``dtype`` when the online model trains in half-precision weights
        (no autocast of its own); a no-op in fp32/fp64 (float64: the exactness tests; autocast
        has no float64 target) and under the trainer's bf16 autocast."""
        if dtype in (torch.float32, torch.float64) or torch.is_autocast_enabled(device.type):
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        online_params = dict(online.named_parameters())
        with modifiable(*online_params.values()):   # (ZeRO-3: the full parameters from here on)
            followers, leaders, copies, sources = [], [], [], []
            for name, value in self.shadow.named_buffers():
                if name in online_params:
                    followers.append(value)
                    leaders.append(online_params[name].detach().to(value.dtype))
                else:  # BatchNorm statistics and other buffers are copied
                    copies.append(value)
                    sources.append(online.get_buffer(name))
            # One multi-tensor launch per dtype/device group instead of one per tensor.
            if followers:
                torch._foreach_lerp_(followers, leaders, 1.0 - momentum)
            if copies:
                torch._foreach_copy_(copies, sources)
