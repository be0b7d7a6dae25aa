"""PRIOR's sentence prototype generation (Cheng et al., ICCV 2023, §3.4; official
``models/prior.py: recon_report, spg_loss`` and ``decoders/sentence.py``).

Q = 16 learned queries go through an 8-layer transformer decoder that cross-attends the
image tokens and become generated prototypes g₁…g_Q. Each report's targets are the bank's
soft prototypes ŝ₁…ŝ_n of its first n ≤ Q sentences. Hungarian matching with cost
C_ij = |g_i − ŝ_j|₁ pairs every target with one query (σ); then
  L_l1  = mean |g_σ(j) − ŝ_j|₁ over the real targets (padded slots excluded),
  L_kl  = KL(softmax(s_j·Pᵀ) ‖ softmax(g_σ(j)·Pᵀ)) (code: F.kl_div(…, batchmean)), the
          assignment distribution of the sentence (target, detached) against that of its
          generated prototype,
  L_gpa = CLIP InfoNCE between the report vector t and the pooled generated prototypes
          pool(mix(g_σ)) (the matched outputs passed through the bank again, then the
          text encoder's sentence pooling), over the global batch.
Matching: all the batch's cost matrices are solved at once on the device
(``kgvlp.modules.assignment``: scipy's ``linear_sum_assignment`` algorithm batched, the same
assignment, ties included), with no copy to the host.

``official_quirks`` reproduces the code: a causal mask in the decoder (``is_decoder=True``),
padded all-zero target slots inside the cost and the L1, the permutation applied inverted
(``logit[inds[1]]``), the KL target not detached; and its stage-3 coupling and decoder:
L_gpa's report vector pools the (cut) target prototypes (models/prior.py:532, 546) with
prior_global's scale (:254, published by prior_global), the queries pass BERT's embedding
layer (position + token-type embedding, LayerNorm, dropout; decoders/sentence.py:20), every
LayerNorm has BERT's eps 1e-12, and the feed-forward has no inner dropout (BertIntermediate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.modules.assignment import linear_sum_assignment
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.modules.contrastive import LogitScale, clip_loss
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from kgvlp.objectives.shared import published


@dataclass
class PrototypeGenerationConfig(ObjectiveConfig):
    num_queries: int = 16          # Q: code num_queries 16; reports are cut to Q sentences
    num_layers: int = 8            # code: CrossModalityBertDecoder, 8 BERT layers
    num_heads: int = 12            # code: Bio_ClinicalBERT's 12 heads
    ffn_ratio: float = 4.0         # code: BERT intermediate 3072 = 4 × 768
    dropout: float = 0.1           # code: BERT hidden/attention dropout 0.1
    l1_weight: float = 1.0         # code: spg_loss × λ_proto (10) — give the objective weight 10
    kl_weight: float = 0.1         # code: kl_loss × 1 → 0.1 under the objective's weight 10
    contrast_weight: float = 0.1   # code: gpa_loss × 1 → 0.1 under the objective's weight 10
    temperature: float = 0.01      # initial τ of L_gpa's own scale (official_quirks: prior_global's)
    max_scale: float = 100.0       # CLIP's clamp of that scale
    gather: bool = True            # L_gpa negatives from all ranks (code: SyncFunction)
    official_quirks: bool = False
    matcher: Literal["torch", "triton"] = "torch"  # torch (tensor ops, any device) | triton (one CUDA launch)


def bert_initialise(module: nn.Module, std: float = 0.02) -> None:
    """BERT's ``_init_weights`` (the code's decoder is a ``BertModel``): every projection
    N(0, ``std``) with zero bias — nn.MultiheadAttention's packed q/k/v included — and
    LayerNorm 1 / 0; torch's own init is Xavier / Kaiming-uniform."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.MultiheadAttention):
            nn.init.normal_(sub.in_proj_weight, std=std)
            nn.init.zeros_(sub.in_proj_bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


BERT_LAYER_NORM_EPS = 1e-12         # BertConfig.layer_norm_eps (nn.TransformerDecoderLayer: 1e-5)


class QueryEmbeddings(nn.Module):
    """BERT's embedding layer applied to the learned queries, as the code's decoder (a
    BertModel fed ``inputs_embeds``) does: (q + token-type-0 + position) → LayerNorm → dropout."""

    def __init__(self, num_queries: int, width: int, dropout: float):
        super().__init__()
        self.position = nn.Parameter(torch.randn(num_queries, width) * 0.02)   # BERT initializer_range
        self.token_type = nn.Parameter(torch.randn(width) * 0.02)
        self.norm = nn.LayerNorm(width, eps=BERT_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor) -> Tensor:
        return self.dropout(self.norm(queries + self.token_type + self.position))


def causal_mask(size: int, device) -> Tensor:
    return torch.triu(torch.ones(size, size, dtype=torch.bool, device=device), diagonal=1)


def match_slots(cost: Tensor, valid: Tensor, solver: str = "torch") -> Tensor:
    """Per sample, the query matched to each target slot: (B, Q, S) cost, (B, S) bool valid
    targets → (B, S) query index (-1 on invalid slots), on the cost's device. Padded slots
    take no part: scipy's solution of ``cost[b][:, valid[b]]``."""
    return linear_sum_assignment(cost, col_mask=valid, solver=solver).row_for_col


def hungarian(cost: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``match_slots`` on host arrays."""
    return match_slots(torch.as_tensor(cost), torch.as_tensor(valid)).numpy()


class PrototypeGeneration(Objective):
    Config = PrototypeGenerationConfig
    shared_width = True   # compares image and text features directly
    requires = frozenset({Need.IMAGE_TOKENS, Need.TEXT_GLOBAL, Need.PROTOTYPE_BANK})
    term_weights = {"l1": "l1_weight", "kl": "kl_weight", "contrast": "contrast_weight"}

    def __init__(self, cfg: PrototypeGenerationConfig, dims):
        super().__init__(cfg, dims)
        width = dims.text_width
        if dims.image_token_width != width:
            raise ValueError(f"prototype_generation decodes image tokens into the text width: got "
                             f"{dims.image_token_width} and {width}; set model.image.projection_dim = "
                             f"model.text.projection_dim (PRIOR: 768)")
        if cfg.matcher not in ("torch", "triton"):
            raise ValueError(f"prototype_generation.matcher: {cfg.matcher!r}, expected torch | triton")
        self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, width))   # code: torch.randn
        quirks = cfg.official_quirks
        # Post-norm, as BERT. Ours: no embedding layer, torch's LayerNorm eps 1e-5.
        layer = nn.TransformerDecoderLayer(width, cfg.num_heads, int(cfg.ffn_ratio * width), dropout=cfg.dropout,
                                           batch_first=True, activation="gelu",
                                           layer_norm_eps=BERT_LAYER_NORM_EPS if quirks else 1e-5)
        if quirks:
            layer.dropout = nn.Identity()      # BertIntermediate → BertOutput: no dropout between
        self.embeddings = QueryEmbeddings(cfg.num_queries, width, cfg.dropout) if quirks else None
        self.decoder = nn.TransformerDecoder(layer, cfg.num_layers)
        if quirks:
            bert_initialise(self.decoder)
        # official_quirks: L_gpa uses prior_global's scale, so none of its own.
        self.logit_scale = None if quirks else LogitScale(cfg.temperature, cfg.max_scale)
        self.reads_from = ("prior_global",) if quirks else ()
        self.fixed_assignment: np.ndarray | None = None   # tests/parity: (B, S) query per slot

    def generate(self, image_tokens: Tensor) -> Tensor:
        """(B, P, D) image tokens → (B, Q, D) generated prototypes."""
        queries = self.queries.expand(image_tokens.shape[0], -1, -1)
        if self.embeddings is not None:
            queries = self.embeddings(queries)
        mask = causal_mask(queries.shape[1], queries.device) if self.cfg.official_quirks else None
        return self.decoder(queries, image_tokens, tgt_mask=mask)

    def match(self, generated: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """(B, S) long index of the generated prototype paired with each target slot."""
        if self.fixed_assignment is not None:
            return torch.as_tensor(self.fixed_assignment, device=generated.device)
        cost = torch.cdist(at_least_fp32(generated.detach()), at_least_fp32(targets.detach()), p=1)
        if self.cfg.official_quirks:   # padded zero slots compete; code's inverted permutation
            return linear_sum_assignment(cost, solver=self.cfg.matcher).col_for_row   # (B, Q): Q × Q
        return match_slots(cost, valid, self.cfg.matcher)

    def forward(self, features, ctx):
        view = features.extras[Need.PROTOTYPE_BANK.value].for_stage(ctx.stage)
        slots = self.cfg.num_queries
        targets, valid = view.prototypes[:, :slots], view.mask[:, :slots]       # code: cut to Q
        sentences = view.sentences[:, :slots]
        if targets.shape[1] < slots:                                            # pad to Q slots
            pad = slots - targets.shape[1]
            targets, sentences = F.pad(targets, (0, 0, 0, pad)), F.pad(sentences, (0, 0, 0, pad))
            valid = F.pad(valid, (0, pad))
        targets = targets * valid[..., None].to(targets.dtype)                  # padded slots are 0
        generated = self.generate(features.image_tokens)
        index = self.match(generated, targets, valid)                           # (B, S)
        paired = torch.gather(generated, 1, index.clamp(min=0)[..., None].expand(-1, -1, generated.shape[-1]))
        l1 = self._l1(paired, targets, valid)
        kl = self._kl(paired, sentences, valid, view.bank)
        pooled = view.pool(view.mix(paired), valid)
        if self.cfg.official_quirks:   # code: the stage's report vector (pooled prototypes), shared scale
            report, scale = view.pool(targets, valid), published(features, "prior_global", "logit_scale",
                                                                 "prototype_generation")
        else:
            report, scale = features.text_global, self.logit_scale()
        gpa = clip_loss(pooled, report, scale, self.cfg.gather)
        return ObjectiveOutput(terms={"l1": l1, "kl": kl, "contrast": gpa})

    def _l1(self, paired: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        if self.cfg.official_quirks:   # code: F.l1_loss over all Q slots per report, ÷ B
            return (paired - targets).abs().mean()
        error = (paired - targets).abs().mean(-1)
        return (error * valid).sum() / valid.sum().clamp(min=1)

    def _kl(self, paired: Tensor, sentences: Tensor, valid: Tensor, bank: Tensor) -> Tensor:
        """KL(target ‖ generated) summed over prototypes, mean over the real sentences
        (F.kl_div's batchmean over the real rows, computed on every slot and masked so that
        no shape depends on the data)."""
        target = at_least_fp32(sentences @ bank.t()).log_softmax(-1)
        if not self.cfg.official_quirks:
            target = target.detach()
        generated = at_least_fp32(paired @ bank.t()).log_softmax(-1)
        per_slot = (target.exp() * (target - generated)).sum(-1)          # (B, S)
        return (per_slot * valid).sum() / valid.sum().clamp(min=1)

    def after_step(self, ctx) -> None:
        if self.logit_scale is not None:
            self.logit_scale.clamp()
