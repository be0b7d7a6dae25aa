"""Report-conditioned image reconstruction, two ways of hiding the image.

``feature_dropout`` — PRIOR (Cheng et al., ICCV 2023, §3.4; official
``decoders/image.py: ImageDecoder``): the (g×g) token map gets channel Dropout2d(0.5), is
concatenated with a text-conditioned map of the same size (each patch's sigmoid
cross-attention over the report's sentences) and decoded by conv-BN-ReLU upsampling blocks
(×2 each, channels halved) and a 3×3 conv to the full-size image; L = |x̂ − x|₁ (mean).
kgvlp's conditioning is this objective's own cross-attention over the encoder's sentences;
the code reuses the local alignment's patch contexts, over the bank's prototypes in stage 3
(models/prior.py:188, 228), so there the reconstruction also trains prior_local's attention.
Kept separate so reconstruction composes with any objective set (e.g. MGCA's);
``official_quirks`` reads prior_local's contexts instead (``kgvlp.objectives.shared``).

``patch_mask`` — MAE (He et al., CVPR 2022, ``models_mae.py``): the masked view
(``Need.MASKED_IMAGE``: the ViT ran on the visible 25% of patches) is completed with mask
tokens and position embeddings, and a light transformer decoder whose layers also
cross-attend the report's sentences predicts the pixels of every patch; the loss (MSE, or
L1) counts hidden patches only, against per-patch normalised pixels with ``norm_pix``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from kgvlp.objectives.shared import published

MODES = ("feature_dropout", "patch_mask")


@dataclass
class MaskedReconstructionConfig(ObjectiveConfig):
    # feature_dropout (PRIOR, any encoder) | patch_mask (MAE, ViT only)
    mode: Literal["feature_dropout", "patch_mask"] = "feature_dropout"
    dropout: float = 0.5           # feature_dropout: Dropout2d rate, code image_rec_drop_out_rate 0.5
    in_chans: int = 1              # reconstructed channels: code num_colors 1
    decoder_width: int = 128       # patch_mask: ours (MAE: 512)
    decoder_layers: int = 2        # patch_mask: ours (MAE: 8)
    decoder_heads: int = 4         # patch_mask: ours (MAE: 16)
    norm_pix: bool = True          # patch_mask: per-patch normalised targets (MAE's best setting)
    loss: Literal["mse", "l1"] = "mse"  # patch_mask: mse (MAE) | l1 (PRIOR's pixel loss)
    # feature_dropout: maps built by view without permute, conditioned on prior_local's
    # patch contexts (code prior.py:188, 228-230)
    official_quirks: bool = False


class SentenceConditioning(nn.Module):
    """Each patch's sigmoid cross-attention over the report's sentences (one head, √d):
    (B, P, D), (B, S, D), (B, S) → (B, P, D)."""

    def __init__(self, width: int):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))

    def forward(self, patches: Tensor, sentences: Tensor, mask: Tensor) -> Tensor:
        scores = self.query(patches) @ self.key(sentences).transpose(1, 2) / math.sqrt(patches.shape[-1])
        return (torch.sigmoid(scores) * mask[:, None, :].to(scores.dtype)) @ self.value(sentences)


def upsampling_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """PRIOR's DecoderBlock: nearest ×2, then two Conv3×3–BN–ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


def tokens_to_map(tokens: Tensor, grid: int, official_view: bool) -> Tensor:
    """(B, g·g, D) → (B, D, g, g); ``official_view``: code's ``view`` without permute
    (models/prior.py:229-230), which scrambles channels and positions."""
    batch, _, width = tokens.shape
    if official_view:
        return tokens.reshape(batch, width, grid, grid)
    return tokens.transpose(1, 2).reshape(batch, width, grid, grid)


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) → (B, P, patch²·C), patches in row-major order (MAE)."""
    batch, channels, height, width = images.shape
    x = images.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // patch) * (width // patch), -1)


class MaskedReconstruction(Objective):
    Config = MaskedReconstructionConfig
    shared_width = True   # compares image and text features directly

    def __init__(self, cfg: MaskedReconstructionConfig, dims):
        super().__init__(cfg, dims)
        if cfg.mode not in MODES or cfg.loss not in ("mse", "l1"):
            raise ValueError(f"masked_reconstruction: mode {cfg.mode!r} ({' | '.join(MODES)}), "
                             f"loss {cfg.loss!r} (mse | l1)")
        self.grid = int(round(math.sqrt(dims.num_image_tokens)))
        if cfg.mode == "feature_dropout":
            self.reads_from = ("prior_local",) if cfg.official_quirks else ()
            self.requires = frozenset({Need.IMAGE_TOKENS, Need.SENTENCES, Need.PIXELS})
            self._build_conv_decoder(dims)
        else:
            self.requires = frozenset({Need.MASKED_IMAGE, Need.SENTENCES, Need.PIXELS})
            self._build_patch_decoder(dims)

    # -- feature_dropout (PRIOR) ---------------------------------------------------------
    def _build_conv_decoder(self, dims) -> None:
        width = dims.image_token_width
        if not self.cfg.official_quirks:   # the quirk conditions on prior_local's contexts
            self.text_projection = (nn.Linear(dims.text_width, width) if dims.text_width != width else nn.Identity())
            self.conditioning = SentenceConditioning(width)
        self.feature_dropout = nn.Dropout2d(self.cfg.dropout)
        num_blocks = max(1, round(math.log2(dims.image_size / self.grid)))
        channels = [2 * width // 2 ** i for i in range(num_blocks + 1)]
        self.blocks = nn.Sequential(*(upsampling_block(c_in, c_out) for c_in, c_out in zip(channels, channels[1:])))
        self.head = nn.Conv2d(channels[-1], self.cfg.in_chans, 3, padding=1)

    def _feature_dropout(self, features) -> Tensor:
        patches = features.image_tokens
        quirk = self.cfg.official_quirks
        if quirk:
            conditioned = published(features, "prior_local", "patch_context", "masked_reconstruction")
        else:
            sentences, mask = features.sentences, features.sentence_mask
            conditioned = self.conditioning(patches, self.text_projection(sentences), mask)
        image_map = self.feature_dropout(tokens_to_map(patches, self.grid, quirk))
        z = torch.cat([image_map, tokens_to_map(conditioned, self.grid, quirk)], dim=1)
        output = self.head(self.blocks(z))
        target = features.images
        if target.shape[-2:] != output.shape[-2:]:    # code: the image is resized to the output
            target = F.interpolate(target, size=output.shape[-2:], mode="bilinear", align_corners=True)
        return F.l1_loss(output, target.to(output.dtype))

    # -- patch_mask (MAE) ----------------------------------------------------------------
    def _build_patch_decoder(self, dims) -> None:
        cfg, width = self.cfg, self.cfg.decoder_width
        patch = dims.image_size // self.grid
        self.embed = nn.Linear(dims.image_token_width, width)
        self.text_embed = nn.Linear(dims.text_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, dims.num_image_tokens, width) * 0.02)
        layer = nn.TransformerDecoderLayer(width, cfg.decoder_heads, 4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers, norm=nn.LayerNorm(width))
        self.pixels = nn.Linear(width, patch * patch * cfg.in_chans)
        nn.init.normal_(self.mask_token, std=0.02)

    def _patch_mask(self, features) -> Tensor:
        view = features.extras[Need.MASKED_IMAGE.value]
        visible = self.embed(view.tokens)                                       # (B, V, w)
        batch_size, num_patches = view.hidden.shape
        x = self.mask_token.expand(batch_size, num_patches, -1).clone()
        x = x.scatter(1, view.keep_index[..., None].expand_as(visible), visible) + self.position
        sentences, mask = features.sentences, features.sentence_mask
        memory = self.text_embed(sentences)
        no_sentence = ~mask.any(1, keepdim=True)                                # keep one key valid
        x = self.decoder(x, memory, memory_key_padding_mask=~(mask | (no_sentence & (torch.arange(
            mask.shape[1], device=mask.device) == 0))))
        prediction = self.pixels(x)                                             # (B, P, p²·C)
        target = patchify(features.images, view.patch_size).to(prediction.dtype)
        if self.cfg.norm_pix:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        error = (prediction - target) ** 2 if self.cfg.loss == "mse" else (prediction - target).abs()
        hidden = view.hidden.to(error.dtype)
        return (error.mean(-1) * hidden).sum() / hidden.sum().clamp(min=1)

    def forward(self, features, ctx):
        if self.cfg.mode == "feature_dropout":
            return ObjectiveOutput(terms={"image": self._feature_dropout(features)})
        return ObjectiveOutput(terms={"patches": self._patch_mask(features)})
