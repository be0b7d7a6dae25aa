"""MLIP text swapping: detect which sentences of a report came from another study.

The swap is built in the model from the token-level ``sentence_index`` (no second text
pass): sentence features s_{b,i} = mean of report b's token states in sentence i (S slots).
For each report b a donor study d(b) with *different findings* (Jaccard of the finding
sets < ``different_below``) is drawn uniformly; each real sentence is replaced with
probability ``swap_ratio`` by a random sentence of the donor. A fusion module (sentence
slots attend to each other and, with ``use_image``, to the image patches) predicts per
sentence whether it was swapped: L = BCE over the real sentences.

Reading: the paper names the task only; swapping encoded sentence features (rather than
re-tokenising and re-encoding a swapped report) is ours, chosen so the task costs no extra
encoder pass. Its known weakness: contextual token states carry some of their own report's
context, a cue a re-encoded swap would not give (docs/mlip.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.models.text import sentence_means
from kgvlp.modules.distributed import step_generator
from kgvlp.modules.fusion import cross_attention_stack
from kgvlp.modules.knowledge_bank import FINDINGS_SOURCES, findings_jaccard, findings_needs
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class TextSwapConfig(ObjectiveConfig):
    swap_ratio: float = 0.3        # ours: each sentence swapped with this probability
    max_sentences: int = 16        # S: sentence slots (later sentences are ignored)
    width: int = 256               # ours
    layers: int = 2                # ours
    heads: int = 4
    use_image: bool = True         # ours: sentences also attend to the image patches
    findings_from: Literal["entities", "labels", "none"] = "entities"  # entities | labels | none
    different_below: float = 1.0   # donor's Jaccard with the report must be < this
    seed: int = 1


def swap_sentences(sentences: Tensor, valid: Tensor, donor_allowed: Tensor, ratio: float,
                   generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Replace a share of each report's sentences by sentences of an allowed donor report.

    sentences (B, S, D), valid (B, S) bool, donor_allowed (B, B) bool (diagonal False).
    Returns swapped sentences (B, S, D), labels (B, S) float (1 = swapped) and donor (B,)
    (-1 where no donor was allowed: nothing swapped)."""
    batch, slots, _ = sentences.shape
    has_donor = donor_allowed.any(1)
    weights = torch.where(has_donor[:, None], donor_allowed.float(), torch.ones_like(donor_allowed, dtype=torch.float))
    donor = torch.multinomial(weights, 1, generator=generator)[:, 0]                        # (B,)
    flip = torch.rand(batch, slots, generator=generator, device=sentences.device) < ratio
    swapped = flip & valid & has_donor[:, None]
    donor_slot = torch.multinomial(valid[donor].float(), slots, replacement=True, generator=generator)  # (B, S)
    donor_sentences = sentences[donor[:, None], donor_slot]
    out = torch.where(swapped[..., None], donor_sentences, sentences)
    return out, swapped.float(), torch.where(has_donor, donor, -1)


class TextSwap(Objective):
    Config = TextSwapConfig
    requires = frozenset({Need.TEXT_TOKENS})

    def __init__(self, cfg: TextSwapConfig, dims):
        super().__init__(cfg, dims)
        if cfg.findings_from not in FINDINGS_SOURCES:
            raise ValueError(f"text_swap.findings_from {cfg.findings_from!r}: {' | '.join(FINDINGS_SOURCES)}")
        self.requires = self.requires | findings_needs(cfg.findings_from)
        if cfg.use_image:
            self.requires = self.requires | {Need.IMAGE_TOKENS}
            self.image_in = nn.Linear(dims.image_token_width, cfg.width)
        self.sentence_in = nn.Linear(dims.text_width, cfg.width)
        self.position = nn.Parameter(torch.zeros(cfg.max_sentences, cfg.width))
        nn.init.normal_(self.position, std=0.02)
        if cfg.use_image:
            self.fusion = cross_attention_stack(cfg.width, cfg.heads, cfg.layers)
        else:
            layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.fusion = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.width, 1)

    def forward(self, features, ctx):
        cfg = self.cfg
        # its own sentence slots (max_sentences), so the model's sentence features do not serve
        sentences, valid = sentence_means(features.text_tokens, features.token_sentence_index, cfg.max_sentences)
        jaccard = findings_jaccard(cfg.findings_from, features)
        eye = torch.eye(jaccard.shape[0], dtype=torch.bool, device=jaccard.device)
        allowed = ~eye if cfg.findings_from == "none" else (jaccard < cfg.different_below) & ~eye
        generator = step_generator(ctx, sentences.device, cfg.seed)
        swapped, labels, _ = swap_sentences(sentences, valid, allowed, cfg.swap_ratio, generator)
        x = self.sentence_in(swapped) + self.position
        if cfg.use_image:
            x = self.fusion(x, self.image_in(features.image_tokens), tgt_key_padding_mask=~valid)
        else:
            x = self.fusion(x, src_key_padding_mask=~valid)
        logits = self.head(x)[..., 0].float()
        per_sentence = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * valid
        count = valid.float().sum().clamp(min=1)
        loss = per_sentence.sum() / count
        with torch.no_grad():
            accuracy = (((logits > 0).float() == labels) & valid).float().sum() / count
            share = (labels * valid).sum() / count
        return ObjectiveOutput(terms={"text_swap": loss}, metrics={"acc": accuracy, "swapped_share": share})
