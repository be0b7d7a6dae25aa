"""The MAE-style masked view of each image (provides ``Need.MASKED_IMAGE``).

Once per step a random share of the patches of every image is hidden (MAE: per-sample
random shuffle, keep the first ``1 − mask_ratio``), and the online ViT encodes the visible
patches only (with their position embeddings and [CLS]), as MAE's encoder does
(He et al., CVPR 2022, ``models_mae.py: random_masking``). The mask comes from the torch
RNG, which the engine checkpoints, so a resumed run draws the same masks.

ViT encoders only: a CNN cannot skip hidden patches; PRIOR's ResNet reconstruction uses
``masked_reconstruction.mode: feature_dropout`` instead, which needs no masked view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from kgvlp.models.features import Features, Need
from kgvlp.models.image import ViTEncoder
from kgvlp.modules.service import Service, ServiceConfig


@dataclass
class MaskedViewConfig(ServiceConfig):
    mask_ratio: float = 0.75       # MAE's default share of hidden patches


@dataclass
class MaskedView:
    """tokens: (B, V, D) encoder output on the V visible patches (no [CLS]), in kept order;
    keep_index: (B, V) long patch positions of those tokens; hidden: (B, P) bool, True on
    hidden patches; grid: patches per side; patch_size: pixels per patch side."""
    batch_independent: ClassVar[frozenset[str]] = frozenset()   # grid, patch_size: plain ints
    tokens: Tensor
    keep_index: Tensor
    hidden: Tensor
    grid: int
    patch_size: int


class MaskedViewService(Service):
    Config = MaskedViewConfig
    provides = Need.MASKED_IMAGE

    def __init__(self, cfg: MaskedViewConfig, model: nn.Module):
        super().__init__(cfg, model)
        if not isinstance(model.image_encoder, ViTEncoder):
            raise ValueError("the masked image view (masked_reconstruction.mode: patch_mask) runs a ViT on "
                             f"visible patches only; model.image is a CNN ({type(model.image_encoder).__name__}): "
                             "use masked_reconstruction.mode: feature_dropout (PRIOR's) instead")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ValueError(f"model.services.masked_view.mask_ratio must be in (0, 1), got {cfg.mask_ratio}")

    def provide(self, model, batch, features: Features) -> MaskedView:
        encoder = model.image_encoder
        images = batch.images
        batch_size, num_patches = images.shape[0], encoder.backbone.patch_embed.num_patches
        keep = max(1, int(round(num_patches * (1 - self.cfg.mask_ratio))))
        noise = torch.rand(batch_size, num_patches, device=images.device)
        keep_index = noise.argsort(dim=1)[:, :keep]                   # (B, V)
        hidden = torch.ones(batch_size, num_patches, dtype=torch.bool, device=images.device)
        hidden.scatter_(1, keep_index, False)
        with encoder.visible_only(keep_index):                        # positions, then the visible patches
            x = encoder.backbone.forward_features(images)
        tokens = x[:, encoder.backbone.num_prefix_tokens:]
        if getattr(encoder, "token_projection", None) is not None:
            tokens = encoder.token_projection(tokens)
        grid = int(round(num_patches ** 0.5))
        return MaskedView(tokens=tokens, keep_index=keep_index, hidden=hidden, grid=grid,
                          patch_size=batch.images.shape[-1] // grid)
