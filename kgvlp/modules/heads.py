"""MGCA's projection heads (Linear–BN–ReLU–Linear–BN, 128-d), shared by ITA and CPA."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GlobalProjection(nn.Module):
    """d → 2048 → 128 with BatchNorm (the last one without affine), L2-normalised output."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim, affine=False))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)


class SharedProjections(nn.Module):
    """The shared image/text embedding space (service owned once by the model)."""

    def __init__(self, image_width: int, text_width: int, hidden_dim: int = 2048, out_dim: int = 128):
        super().__init__()
        self.image = GlobalProjection(image_width, hidden_dim, out_dim)
        self.text = GlobalProjection(text_width, hidden_dim, out_dim)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over token features whose statistics count only valid tokens.

    MGCA's official local heads (BatchNorm over B×111 word slots) let padding shape the
    statistics, so results depend on the padded length; with a mask they do not.
    ``x``: (N, C); ``mask``: (N,) bool or None (= plain BatchNorm).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None or not self.training:
            return super().forward(x)
        weights = mask.to(x.dtype)[:, None]
        count = weights.sum().clamp(min=1.0)
        mean = (x * weights).sum(0) / count
        var = (((x - mean) ** 2) * weights).sum(0) / count
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1.0)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked += 1
        out = (x - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out


class TokenProjection(nn.Module):
    """MGCA's local head (1×1 conv = per-token Linear): d → 2048 → 128, BN, L2-normalised.
    (B, N, d) tokens + optional (B, N) validity mask → (B, N, 128)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn1 = MaskedBatchNorm1d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.bn2 = MaskedBatchNorm1d(out_dim, affine=False)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, length, _ = tokens.shape
        flat_mask = None if mask is None else mask.reshape(-1)
        x = self.fc1(tokens.reshape(batch * length, -1))
        x = torch.relu(self.bn1(x, flat_mask))
        x = self.bn2(self.fc2(x), flat_mask)
        return F.normalize(x.reshape(batch, length, -1), dim=-1)
