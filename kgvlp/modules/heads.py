"""MGCA's projection heads (Linear–BN–ReLU–Linear–BN, 128-d), shared by ITA and CPA."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.modules.distributed import at_least_fp32, world_size


class GlobalProjection(nn.Module):
    """d → 2048 → 128 with BatchNorm (the last one without affine), L2-normalised output."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, sync_bn: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), MaskedBatchNorm1d(hidden_dim, sync=sync_bn), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim), MaskedBatchNorm1d(out_dim, affine=False, sync=sync_bn))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


class LinearProjection(nn.Module):
    """d → out with one bias-free Linear, L2-normalised output (CLIP's text projection): no
    batch statistics, so text unlike the training reports is projected as the tower sees it."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.proj(x), dim=-1)


class SharedProjections(nn.Module):
    """The shared image/text embedding space (service owned once by the model).

    ``text_head``: mgca (``GlobalProjection``) | linear (``LinearProjection``)."""

    def __init__(self, image_width: int, text_width: int, hidden_dim: int = 2048, out_dim: int = 128,
                 sync_bn: bool = True, text_head: str = "mgca"):
        super().__init__()
        self.image = GlobalProjection(image_width, hidden_dim, out_dim, sync_bn)
        self.text = (GlobalProjection(text_width, hidden_dim, out_dim, sync_bn) if text_head == "mgca"
                     else LinearProjection(text_width, out_dim))


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose statistics count only valid rows and, with ``sync``, all ranks.

    - Masks: MGCA's official local heads (BatchNorm over B×111 word slots) let padding
      shape the statistics, so results depend on the padded length; with a mask they do not.
    - Sync: the official heads normalise per GPU, so two ranks differ from one process on
      the concatenated batch; synchronised statistics (a differentiable all-reduce of the
      count, sum and sum of squares) make them equal.
    ``x``: (N, C); ``mask``: (N,) bool or None. With neither a mask nor more than one
    synchronised rank this is exactly ``nn.BatchNorm1d``.
    """

    def __init__(self, *args, sync: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.sync = sync

    @staticmethod
    def _reduce(values: Tensor, synced: bool) -> Tensor:
        if not synced:
            return values
        from torch.distributed.nn.functional import all_reduce  # differentiable sum
        return all_reduce(values)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        synced = self.sync and world_size() > 1
        if not self.training or (mask is None and not synced):
            return super().forward(x)
        x32 = at_least_fp32(x)
        weights = torch.ones_like(x32[:, :1]) if mask is None else mask.to(x32.dtype)[:, None]
        # Two passes (mean, then centred squares): E[x²] − mean² cancels badly in float32.
        first = self._reduce(torch.cat([weights.sum(0), (x32 * weights).sum(0)]), synced)
        count = first[0].clamp(min=1.0)
        mean = first[1:] / count
        var = self._reduce((((x32 - mean) ** 2) * weights).sum(0), synced) / count
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1.0)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked += 1
        out = (x32 - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


class TokenProjection(nn.Module):
    """MGCA's local head (1×1 conv = per-token Linear): d → 2048 → 128, BN, L2-normalised.
    (B, N, d) tokens + optional (B, N) validity mask → (B, N, 128)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, sync_bn: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn1 = MaskedBatchNorm1d(hidden_dim, sync=sync_bn)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.bn2 = MaskedBatchNorm1d(out_dim, affine=False, sync=sync_bn)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, length, _ = tokens.shape
        flat_mask = None if mask is None else mask.reshape(-1)
        x = self.fc1(tokens.reshape(batch * length, -1))
        x = torch.relu(self.bn1(x, flat_mask))
        x = self.bn2(self.fc2(x), flat_mask)
        return F.normalize(x.reshape(batch, length, -1), dim=-1)
