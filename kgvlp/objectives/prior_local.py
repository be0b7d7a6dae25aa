"""PRIOR's local alignment between image patches and report sentences (Cheng et al., ICCV
2023, §3.2; official ``modules/local_attention.py`` and ``models/prior.py:
local_alignment_loss``), vectorised over the batch with sentence masks.

Cross-attention both ways, single head, separate Q/K/V, sigmoid instead of softmax:
  patch→sentence  c_p = σ(Q_v(p)·K_t(S)ᵀ/√d) V_t(S)     (text-conditioned patch, "t2i")
  sentence→patch  c_s = σ(Q_t(s)·K_v(P)ᵀ/√d) V_v(P)     (image-conditioned sentence, "i2t")
Image side, SimSiam (no negatives: neighbouring patches overlap in receptive field):
  L_img = −½ [cos(h(p), sg(c_p)) + cos(h(c_p), sg(p))], mean over patches, h = predictor
  d → d/2 → d.
Text side, InfoNCE among the sentences of the same report (learnable scale s_l, 1/0.01):
  L_txt = ½ [CE(s_l·ĉ·ŝᵀ, I) + CE(s_l·ŝ·ĉᵀ, I)] over each report's real sentences.
Both are means over the report's rows, then over the batch (code: summed over samples ÷ B).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.modules.contrastive import LogitScale
from kgvlp.modules.sentence_bank import report_sentences, uses_bank
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from kgvlp.objectives.shared import publish


@dataclass
class PriorLocalConfig(ObjectiveConfig):
    temperature: float = 0.01      # initial τ of the sentence InfoNCE: code local_temperature 0.01
    max_scale: float = 100.0       # ours (as prior_global); official_quirks: no clamp (code)
    predictor_hidden: float = 0.5  # predictor d → d·0.5 → d: code embed_dim // 2 (768→384→768)
    # Stages in which the sentences are the bank's prototypes (PRIOR: [stage2, stage3]).
    prototype_stages: List[str] = field(default_factory=list)
    official_quirks: bool = False  # true: no clamp on the scale


class SigmoidCrossAttention(nn.Module):
    """Both directions of PRIOR's LocalCrossAttention, batched: (B, P, D) patches and
    (B, S, D) sentences with a (B, S) mask → (B, P, D) patch contexts, (B, S, D) sentence
    contexts. Padded sentences get attention 0 (σ(−∞)) as keys."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.image_qkv = nn.ModuleList(nn.Linear(width, width) for _ in range(3))
        self.text_qkv = nn.ModuleList(nn.Linear(width, width) for _ in range(3))

    def forward(self, patches: Tensor, sentences: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q_img, k_img, v_img = (layer(patches) for layer in self.image_qkv)
        q_txt, k_txt, v_txt = (layer(sentences) for layer in self.text_qkv)
        scale = math.sqrt(self.width)
        patch_scores = q_img @ k_txt.transpose(1, 2) / scale                  # (B, P, S)
        patch_attention = torch.sigmoid(patch_scores) * mask[:, None, :].to(patches.dtype)
        sentence_attention = torch.sigmoid(q_txt @ k_img.transpose(1, 2) / scale)   # (B, S, P)
        return patch_attention @ v_txt, sentence_attention @ v_img


def simsiam(patches: Tensor, contexts: Tensor, predictor: nn.Module) -> Tensor:
    """−½[cos(h(p), sg(c)) + cos(h(c), sg(p))], mean over patches then batch."""
    forward = F.cosine_similarity(predictor(patches), contexts.detach(), dim=-1)
    backward = F.cosine_similarity(predictor(contexts), patches.detach(), dim=-1)
    return -0.5 * (forward.mean() + backward.mean())


def sentence_infonce(sentences: Tensor, contexts: Tensor, mask: Tensor, scale: Tensor) -> Tensor:
    """InfoNCE among the sentences of each report (B, S, D) both ways, padded slots neither
    anchors nor negatives; mean over each report's sentences, then over reports."""
    sentences, contexts = F.normalize(sentences, dim=-1), F.normalize(contexts, dim=-1)
    logits = at_least_fp32(scale * contexts @ sentences.transpose(1, 2))     # (B, S, S) c→s
    pair = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    neg_inf = torch.finfo(logits.dtype).min
    c2s = logits.masked_fill(~pair, neg_inf)
    s2c = logits.transpose(1, 2).masked_fill(~pair, neg_inf)
    per_row = [-(scores.log_softmax(-1) * eye).sum(-1) for scores in (c2s, s2c)]   # (B, S) each
    weights = mask.to(logits.dtype)
    per_report = sum((row * weights).sum(-1) for row in per_row) / (2 * weights.sum(-1).clamp(min=1))
    return per_report.mean()


class PriorLocal(Objective):
    Config = PriorLocalConfig
    shared_width = True   # compares image and text features directly

    def __init__(self, cfg: PriorLocalConfig, dims):
        super().__init__(cfg, dims)
        if dims.image_token_width != dims.text_width:
            raise ValueError(f"prior_local needs image tokens and text tokens of one width, got "
                             f"{dims.image_token_width} and {dims.text_width}: set model.image.projection_dim "
                             f"and model.text.projection_dim to the same value (PRIOR: 768)")
        self.requires = frozenset({Need.IMAGE_TOKENS, Need.SENTENCES}) | uses_bank(cfg.prototype_stages)
        width = dims.text_width
        hidden = max(1, int(width * cfg.predictor_hidden))
        self.cross_attention = SigmoidCrossAttention(width)
        self.predictor = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))
        nn.init.normal_(self.predictor[0].weight, std=width ** -0.5)          # code's init
        self.logit_scale = LogitScale(cfg.temperature, None if cfg.official_quirks else cfg.max_scale)

    def forward(self, features, ctx):
        sentences, mask = report_sentences(features, self.cfg.prototype_stages, ctx.stage)
        patches = features.image_tokens
        patch_context, sentence_context = self.cross_attention(patches, sentences, mask)
        publish(features, "prior_local", "patch_context", patch_context)  # masked_reconstruction's quirk
        scale = self.logit_scale()
        return ObjectiveOutput(terms={"image": simsiam(patches, patch_context, self.predictor),
                                      "text": sentence_infonce(sentences, sentence_context, mask, scale)},
                               metrics={"logit_scale": scale.detach()})

    def after_step(self, ctx) -> None:
        self.logit_scale.clamp()
