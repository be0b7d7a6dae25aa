"""kgvlp's projection heads in open_clip's vocabulary.

kgvlp's head (kgvlp/modules/heads.py, eval mode) is
    e = normalise(BN₂(W₂ · relu(BN₁(W₁x + b₁)) + b₂)),   BN(z) = (z − μ)/√(σ² + ε)·γ + β.
Eval-mode BN is affine, so it folds into the linear before it (``fold``):
    e = normalise(V₂ · relu(V₁x + c₁) + c₂).

open_clip 3.3 has no ReLU MLP with biases and a 2048-wide hidden layer:
- image (timm tower, ``timm_proj='mlp'``): ``fc1 (bias) → GELU → fc2 (bias)``, hidden = 2E;
- text (HF tower, ``hf_proj_type='mlp'``): ``Linear (no bias) → GELU → Linear (no bias)``,
  hidden = (d + E) // 2, after a pooler (``cls_pooler`` = tanh(dense(h_CLS)), with bias).
Two identities make kgvlp's head exact in those forms (no custom module):
1. ReLU through GELU: GELU(s·z)/s = z·Φ(s·z) differs from relu(z) by at most 0.17/s; with
   s = 2²⁰ that is < 1.7e-7 per hidden unit, and scaling by a power of two is exact in
   floating point. So fc1 = s·(V₁, c₁), fc2 = (V₂, c₂)/s.
2. Biases without bias terms (text): the last LayerNorm's output h = g⊙n + b has Σᵢ nᵢ = 0,
   so one coordinate k is an affine function of the others:
   h_k = b_k − g_k·Σ_{i≠k}(hᵢ − bᵢ)/gᵢ (k = the smallest |g_k|, so no coefficient grows).
   The pooler keeps the other coordinates (tanh(ε·hᵢ)/ε = hᵢ to ε²hᵢ²/3, ε = 2⁻²⁰) and puts a
   constant 1 in slot k (tanh(16) = 1 in float32); the first Linear takes c₁ from that
   constant, and one extra hidden unit (GELU(s·1) = s) carries c₂ through the second.
E (open_clip's embed_dim) is widened until both hidden layers fit; the extra output
dimensions are exactly zero, so normalised embeddings and cosine similarities are kgvlp's.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

GELU_SCALE = 2.0 ** 20     # s: GELU(s·z)/s ≈ relu(z)
TANH_SCALE = 2.0 ** -20    # ε: tanh(ε·h)/ε ≈ h
SATURATE = 16.0            # tanh(16) == 1.0 in float32


def fold(weight: Tensor, bias: Tensor, bn: dict[str, Tensor], eps: float) -> tuple[Tensor, Tensor]:
    """Linear followed by eval-mode BatchNorm → one Linear (float64)."""
    scale = 1.0 / torch.sqrt(bn["running_var"].double() + eps)
    if "weight" in bn:
        scale = scale * bn["weight"].double()
    shift = bn["bias"].double() if "bias" in bn else torch.zeros_like(scale)
    return weight.double() * scale[:, None], (bias.double() - bn["running_mean"].double()) * scale + shift


def folded_head(heads: dict[str, Tensor], tower: str, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(V₁, c₁, V₂, c₂) of ``tower`` from ``heads.safetensors``-named tensors."""
    def bn(name):
        return {k.rsplit(".", 1)[1]: v for k, v in heads.items() if k.startswith(f"{tower}.{name}.")}
    v1, c1 = fold(heads[f"{tower}.fc1.weight"], heads[f"{tower}.fc1.bias"], bn("bn1"), eps)
    v2, c2 = fold(heads[f"{tower}.fc2.weight"], heads[f"{tower}.fc2.bias"], bn("bn2"), eps)
    return v1, c1, v2, c2


def open_clip_embed_dim(hidden: int, out_dim: int, text_width: int) -> int:
    """Smallest E with 2E ≥ hidden (image) and (d + E)//2 ≥ hidden + 1 (text)."""
    return max(out_dim, math.ceil(hidden / 2), 2 * (hidden + 1) - text_width)


def open_clip_image_head(heads: dict[str, Tensor], eps: float, embed_dim: int) -> dict[str, Tensor]:
    """``visual.head.mlp.*`` of a timm tower with ``timm_proj='mlp'``, ``timm_proj_bias=True``."""
    v1, c1, v2, c2 = folded_head(heads, "image", eps)
    hidden, width = v1.shape
    out_dim = v2.shape[0]
    fc1_w = torch.zeros(2 * embed_dim, width, dtype=torch.float64)
    fc1_b = torch.zeros(2 * embed_dim, dtype=torch.float64)
    fc2_w = torch.zeros(embed_dim, 2 * embed_dim, dtype=torch.float64)
    fc2_b = torch.zeros(embed_dim, dtype=torch.float64)
    fc1_w[:hidden], fc1_b[:hidden] = v1 * GELU_SCALE, c1 * GELU_SCALE
    fc2_w[:out_dim, :hidden], fc2_b[:out_dim] = v2 / GELU_SCALE, c2
    return {"visual.head.mlp.fc1.weight": fc1_w, "visual.head.mlp.fc1.bias": fc1_b,
            "visual.head.mlp.fc2.weight": fc2_w, "visual.head.mlp.fc2.bias": fc2_b}


def open_clip_text_head(heads: dict[str, Tensor], eps: float, embed_dim: int,
                        norm_weight: Tensor, norm_bias: Tensor) -> dict[str, Tensor]:
    """``text.transformer.pooler.dense.*`` and ``text.proj.{0,2}.weight`` (see module doc).

    ``norm_weight``/``norm_bias``: g, b of the text transformer's last LayerNorm.
    """
    v1, c1, v2, c2 = folded_head(heads, "text", eps)
    hidden, width = v1.shape
    out_dim = v2.shape[0]
    g, b = norm_weight.double(), norm_bias.double()
    if bool((g == 0).any()):
        k = int((g == 0).nonzero()[0])  # h_k = b_k exactly
        ratio = torch.zeros_like(g)
    else:
        k = int(g.abs().argmin())
        ratio = g[k] / g                # |ratio| ≤ 1
    others = torch.arange(width) != k
    # V₁h = Σ_{i≠k}(V₁[:,i] − V₁[:,k]·g_k/gᵢ)hᵢ + V₁[:,k]·(b_k + g_k·Σ_{i≠k} bᵢ/gᵢ)
    weight = v1 - v1[:, k:k + 1] * ratio[None, :]
    constant = v1[:, k] * (b[k] + (ratio[others] * b[others]).sum()) + c1

    pooler_w = torch.diag(torch.full((width,), TANH_SCALE, dtype=torch.float64))
    pooler_w[k, k] = 0.0
    pooler_b = torch.zeros(width, dtype=torch.float64)
    pooler_b[k] = SATURATE

    text_hidden = (width + embed_dim) // 2
    proj0 = torch.zeros(text_hidden, width, dtype=torch.float64)
    proj0[:hidden] = weight * (GELU_SCALE / TANH_SCALE)
    proj0[:hidden, k] = constant * GELU_SCALE
    proj0[hidden, k] = GELU_SCALE                     # the unit that carries c₂
    proj2 = torch.zeros(embed_dim, text_hidden, dtype=torch.float64)
    proj2[:out_dim, :hidden] = v2 / GELU_SCALE
    proj2[:out_dim, hidden] = c2 / GELU_SCALE
    return {"text.transformer.pooler.dense.weight": pooler_w, "text.transformer.pooler.dense.bias": pooler_b,
            "text.proj.0.weight": proj0, "text.proj.2.weight": proj2}
