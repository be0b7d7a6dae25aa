"""MLIP token–knowledge–patch (TKP) alignment.

For every linked, affirmed concept k of a report (vector e_k from the KnowledgeBank), the
concept queries the report's words and the image's patches by cross-attention:

  w_k = Attn(q = e_k, keys/values = words),   p_k = Attn(q = e_k, keys/values = patches)
  t_k = g_t(w_k),  v_k = g_v(p_k)            (heads, or Tucker fusion g(e_k, ·) with a rank-R core)

and (t_k, v_k) of the same concept instance are aligned by InfoNCE over all concept
instances of the global batch, both directions:

  L = ½[CE(t·Vᵀ/τ) + CE(v·Tᵀ/τ)]   over affirmed instances,

where an instance of the same concept affirmed by another report is not a negative (it
is masked out), and a negated concept is never an anchor or a positive; with
``negated_as_negatives`` its features are kept as negatives ("no effusion" image features
are true negatives for an effusion). The attention, heads and τ are ours (docs/mlip.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.modules.contrastive import columns, global_masked_mean, own_columns
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.modules.fusion import TuckerFusion
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class TKPConfig(ObjectiveConfig):
    embed_dim: int = 128            # ours: width of the aligned features
    attention_dim: int = 256        # ours: width of the concept cross-attention
    num_heads: int = 4              # ours
    temperature: float = 0.07       # ours
    # attention (heads on the attended features) | tucker (paper names it)
    fusion: Literal["attention", "tucker"] = "attention"
    tucker_rank: int = 8            # ours: rank R of the Tucker core
    tucker_hidden: int = 256
    # ours: report (all words) | mention (the concept's own words)
    word_scope: Literal["report", "mention"] = "report"
    # hedged mentions: positive (as affirmed) | exclude
    uncertain: Literal["positive", "exclude"] = "positive"
    negated_as_negatives: bool = True
    gather: bool = True             # instances of the global batch


def instance_info_nce(anchors: Tensor, columns: Tensor, positive: Tensor, allowed: Tensor,
                      is_anchor: Tensor, temperature: float) -> Tensor:
    """Per-row CE of anchors (N, D) against columns (M, D); positive (N,) column index;
    allowed (N, M) bool columns that enter the denominator (the positive always does).
    Rows that are not anchors get loss 0."""
    logits = at_least_fp32(anchors @ columns.t() / temperature)
    logits = logits.masked_fill(~allowed, float("-inf"))
    logits = torch.where(is_anchor[:, None], logits, torch.zeros_like(logits))  # no inf in padding rows
    return F.cross_entropy(logits, positive, reduction="none") * is_anchor


class TKPAlignment(Objective):
    Config = TKPConfig
    requires = frozenset({Need.ENTITIES, Need.WORDS, Need.IMAGE_TOKENS})

    def __init__(self, cfg: TKPConfig, dims):
        super().__init__(cfg, dims)
        if cfg.fusion not in ("attention", "tucker") or cfg.word_scope not in ("report", "mention") \
                or cfg.uncertain not in ("positive", "exclude"):
            raise ValueError(f"tkp_alignment: fusion {cfg.fusion!r} (attention | tucker), word_scope "
                             f"{cfg.word_scope!r} (report | mention), uncertain {cfg.uncertain!r} (positive | exclude)")
        width = cfg.attention_dim
        self.query = nn.Linear(dims.text_width, width)
        self.word_attention = nn.MultiheadAttention(width, cfg.num_heads, kdim=dims.text_width,
                                                    vdim=dims.text_width, batch_first=True)
        self.patch_attention = nn.MultiheadAttention(width, cfg.num_heads, kdim=dims.image_token_width,
                                                     vdim=dims.image_token_width, batch_first=True)
        if cfg.fusion == "tucker":
            self.text_head = TuckerFusion([width, width], cfg.embed_dim, cfg.tucker_hidden, cfg.tucker_rank)
            self.image_head = TuckerFusion([width, width], cfg.embed_dim, cfg.tucker_hidden, cfg.tucker_rank)
        else:
            self.text_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.embed_dim))
            self.image_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, cfg.embed_dim))

    def concept_features(self, entities, features) -> tuple[Tensor, Tensor]:
        """(B, E, embed_dim) text-side and image-side features of every concept slot."""
        query = self.query(entities.vectors)                                  # (B, E, d)
        allowed = features.word_mask[:, None, :].expand(-1, query.shape[1], -1)
        if self.cfg.word_scope == "mention":
            own = entities.word_mask & allowed
            allowed = torch.where(own.any(-1, keepdim=True), own, allowed)
        blocked = (~allowed).repeat_interleave(self.cfg.num_heads, dim=0)     # (B·H, E, W)
        words = features.word_tokens
        word_context = self.word_attention(query, words, words, attn_mask=blocked, need_weights=False)[0]
        patches = features.image_tokens
        patch_context = self.patch_attention(query, patches, patches, need_weights=False)[0]
        if self.cfg.fusion == "tucker":
            text, image = self.text_head(query, word_context), self.image_head(query, patch_context)
        else:
            text, image = self.text_head(word_context), self.image_head(patch_context)
        return F.normalize(text, dim=-1), F.normalize(image, dim=-1)

    def forward(self, features, ctx):
        cfg = self.cfg
        entities = features.extras[Need.ENTITIES.value]
        text, image = self.concept_features(entities, features)
        ids = entities.ids.reshape(-1)
        anchor = entities.affirmed
        if cfg.uncertain == "exclude":
            anchor = anchor & ~entities.uncertain
        candidate = anchor | (entities.valid & entities.negated) if cfg.negated_as_negatives else anchor
        anchor, candidate = anchor.reshape(-1), candidate.reshape(-1)
        text, image = text.flatten(0, 1), image.flatten(0, 1)                 # (B·E, D)

        gather = cfg.gather
        all_text, all_image = columns(text, gather), columns(image, gather)
        all_ids, all_anchor, all_candidate = (columns(x, gather, grad=False) for x in (ids, anchor, candidate))
        positive = own_columns(ids.shape[0], gather, ids.device)
        is_self = F.one_hot(positive, all_ids.shape[0]).bool()
        # Same concept affirmed in another report: not a negative (removed from the denominator).
        same_concept = (ids[:, None] == all_ids[None, :]) & anchor[:, None] & all_anchor[None, :] & ~is_self
        allowed = (all_candidate[None, :] & ~same_concept) | is_self

        loss_t2i = instance_info_nce(text, all_image, positive, allowed, anchor, cfg.temperature)
        loss_i2t = instance_info_nce(image, all_text, positive, allowed, anchor, cfg.temperature)
        loss = 0.5 * (global_masked_mean(loss_t2i, anchor, gather) + global_masked_mean(loss_i2t, anchor, gather))
        with torch.no_grad():
            logits = (text @ all_image.t()).masked_fill(~allowed, float("-inf"))
            hits = (logits.argmax(1) == positive) & anchor
            accuracy = hits.float().sum() / anchor.float().sum().clamp(min=1)
        return ObjectiveOutput(terms={"tkp": loss},
                               metrics={"acc_t2i": accuracy, "anchors": anchor.float().sum()})
