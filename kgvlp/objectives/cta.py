"""MGCA cross-attention-based token-wise alignment (CTA), vectorised over the batch.

Word side (MGCA eq. 4–6): for word w_i, context c_i = Σ_j softmax_j(w_i·p_j/τ₂) p_j over the
report's image patches; logits z_ik = w_i·c_kᵀ/τ₂ over words of the same report;
L_word = ½ Σ_i a_i [CE(z_i, i) + CE(zᵀ_i, i)] / B, with a = word weights clipped to their
10th–90th percentile and renormalised. Patch side: the same with patches and words swapped,
patch weights from the ViT's CLS attention. L_CTA = L_word + L_patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kgvlp.models.features import Need
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.modules.heads import TokenProjection
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput

# Finite "minus infinity": exp() underflows to exactly 0, and rows with nothing valid
# stay finite instead of producing NaN gradients.
NEG_INF = -1e4


@dataclass
class CTAConfig(ObjectiveConfig):
    temperature: float = 0.1           # τ₂, MGCA
    clip_low: float = 0.1              # token weights clipped to the 10th…
    clip_high: float = 0.9             # …90th percentile, then renormalised
    hidden_dim: int = 2048
    official_quirks: bool = False      # see docs/mgca.md: the official word slots ([SEP] a word,
                                       # weights shifted one token), padding as negatives on the word
                                       # side, BN over padded slots, ViT word context unnormalised


def clipped_weights(weights: Tensor, valid: Tensor, low: float, high: float) -> Tensor:
    """Clip each row's valid entries to its [low, high] quantiles (linear interpolation),
    zero the rest, renormalise rows to sum 1. (B, N) → (B, N).

    The weights are constants of the loss (detached): the official code computes them under
    no_grad, so no gradient reaches the encoders' attention through them."""
    weights = at_least_fp32(weights.detach())
    masked = weights.masked_fill(~valid, float("nan"))
    lo = torch.nanquantile(masked, low, dim=1, keepdim=True)
    hi = torch.nanquantile(masked, high, dim=1, keepdim=True)
    clipped = torch.minimum(torch.maximum(weights, lo), hi).masked_fill(~valid, 0.0)
    return clipped / clipped.sum(dim=1, keepdim=True).clamp(min=1e-12)


def attend(queries: Tensor, keys: Tensor, temperature: float, key_valid: Tensor | None) -> Tensor:
    """Σ_j softmax_j(q·k_j/τ) k_j for every query: (B, Q, D), (B, K, D) → (B, Q, D)."""
    scores = queries @ keys.transpose(1, 2) / temperature
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, :], NEG_INF)
    return scores.softmax(dim=-1) @ keys


def weighted_symmetric_ce(anchors: Tensor, contexts: Tensor, weights: Tensor, temperature: float,
                          valid: Tensor | None) -> Tensor:
    """Token-level InfoNCE within each sample, both directions, weighted per anchor.

    anchors, contexts: (B, N, D); weights: (B, N) summing to 1 per row (0 on invalid);
    valid: (B, N) bool marking tokens that may be negatives (None = all).
    Returns Σ_b Σ_i a_bi · ½[CE(z_bi, i) + CE(zᵀ_bi, i)] / B.
    """
    logits = at_least_fp32(anchors @ contexts.transpose(1, 2) / temperature)    # (B, N, N)
    logits_t = logits.transpose(1, 2)
    if valid is not None:  # invalid tokens are never negatives, in either direction
        logits = logits.masked_fill(~valid[:, None, :], NEG_INF)
        logits_t = logits_t.masked_fill(~valid[:, None, :], NEG_INF)
    targets = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")      # (B, N)
    ce_t = F.cross_entropy(logits_t.transpose(1, 2), targets, reduction="none")
    if valid is not None:  # invalid anchors carry weight 0; zero them so no 0·large appears
        ce, ce_t = ce.masked_fill(~valid, 0.0), ce_t.masked_fill(~valid, 0.0)
    return (weights * 0.5 * (ce + ce_t)).sum() / anchors.shape[0]


class CTA(Objective):
    Config = CTAConfig
    requires = frozenset({Need.IMAGE_TOKENS, Need.WORDS})

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        if cfg.official_quirks:   # the official word slots (kgvlp/modules/mgca_words.py)
            self.requires = frozenset({Need.IMAGE_TOKENS, Need.MGCA_WORDS})
        # Per-rank BatchNorm under the official quirks, global statistics otherwise.
        sync = not cfg.official_quirks
        self.image_head = TokenProjection(dims.image_token_width, cfg.hidden_dim, dims.embed_dim, sync)
        self.word_head = TokenProjection(dims.text_width, cfg.hidden_dim, dims.embed_dim, sync)

    def word_patch_attention(self, features) -> Tensor:
        """(B, W, P) softmax_j(w_i·p_j/τ₂): where each word looks (MGCA eq. 4; grounding)."""
        words = self.word_head(features.word_tokens, features.word_mask)
        patches = self.image_head(features.image_tokens)
        return (words @ patches.transpose(1, 2) / self.cfg.temperature).softmax(dim=-1)

    def _words(self, features) -> tuple[Tensor, Tensor, Tensor]:
        """Word states, validity and raw weights: kgvlp's words, or the official slots."""
        if self.cfg.official_quirks:
            slots = features.extras[Need.MGCA_WORDS.value]
            return slots.tokens, slots.mask, slots.weights
        return features.word_tokens, features.word_mask, features.word_weights

    def forward(self, features, ctx):
        cfg, quirks = self.cfg, self.cfg.official_quirks
        word_tokens, word_valid, raw_word_weights = self._words(features)
        patches = self.image_head(features.image_tokens)
        words = self.word_head(word_tokens, None if quirks else word_valid)
        tau = cfg.temperature

        # Word side: words attend patches; padding never acts as an anchor (weight 0) and,
        # unless quirks, never as a negative.
        word_context = F.normalize(attend(words, patches, tau, None), dim=-1)
        word_weights = clipped_weights(raw_word_weights, word_valid if not quirks else raw_word_weights > 0,
                                       cfg.clip_low, cfg.clip_high)
        loss_word = weighted_symmetric_ce(words, word_context, word_weights, tau,
                                          None if quirks else word_valid)

        # Patch side: patches attend words (padding masked); image patches have no padding.
        patch_context = attend(patches, words, tau, word_valid)
        # The official ViT branch skips this re-normalisation, its ResNet branch does it
        # (mgca_module.py:185-186).
        if not quirks or self.dims.image_family != "vit":
            patch_context = F.normalize(patch_context, dim=-1)
        all_patches = torch.ones_like(features.patch_weights, dtype=torch.bool)
        patch_weights = clipped_weights(features.patch_weights, all_patches, cfg.clip_low, cfg.clip_high)
        loss_patch = weighted_symmetric_ce(patches, patch_context, patch_weights, tau, None)
        return ObjectiveOutput(terms={"word": loss_word, "patch": loss_patch})
