"""MLIP image–text matching (ITM) with similarity-sampled hard negatives (ALBEF's recipe).

For each image b a negative report j is drawn with probability ∝ exp(v_b·t_j/τ) among the
reports that are neither its own nor a report with the same findings (Jaccard of the
finding-concept sets ≥ ``same_findings_threshold``; identical by default); likewise a
negative image for each report. A fusion module scores every pair:

  attention: report tokens attend to each other and to the image patches (ALBEF's fusion
             layers); the [CLS] position → Linear(2)
  tucker:    low-rank Tucker fusion of the global image and report vectors → Linear(2)

L = CE over the B positives and the 2B negatives (a row with no admissible negative
contributes only its positive). Negatives come from this rank's batch (ALBEF), drawn from
a generator seeded by the step and rank so a resumed run draws the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Need
from kgvlp.modules.distributed import at_least_fp32, step_generator
from kgvlp.modules.fusion import TuckerFusion, cross_attention_stack
from kgvlp.modules.knowledge_bank import FINDINGS_SOURCES, findings_jaccard, findings_needs
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class ITMConfig(ObjectiveConfig):
    # attention (ALBEF) | tucker (paper names Tucker fusion)
    fusion: Literal["attention", "tucker"] = "attention"
    width: int = 256                   # ours
    layers: int = 2                    # ours (ALBEF: 6)
    heads: int = 4
    tucker_rank: int = 8
    tucker_hidden: int = 256
    temperature: float = 0.07          # of the similarity softmax that draws negatives
    # entities | labels | none: what "same findings" means
    findings_from: Literal["entities", "labels", "none"] = "entities"
    same_findings_threshold: float = 1.0   # Jaccard ≥ this = same findings (1 = identical sets)
    seed: int = 0


def sample_hard_negatives(similarity: Tensor, forbidden: Tensor, generator: torch.Generator,
                          temperature: float) -> tuple[Tensor, Tensor]:
    """One column per row drawn ∝ exp(similarity/τ) among allowed columns.

    similarity/forbidden: (N, M); returns (indices (N,), has_negative (N,) bool). A row with
    every column forbidden draws an arbitrary index and is flagged False (never used)."""
    logits = at_least_fp32(similarity.detach()) / temperature
    logits = logits.masked_fill(forbidden, float("-inf"))
    has_negative = ~forbidden.all(1)
    weights = torch.softmax(torch.where(has_negative[:, None], logits, torch.zeros_like(logits)), dim=1)
    return torch.multinomial(weights, 1, generator=generator)[:, 0], has_negative


def same_findings(source: str, features, threshold: float) -> Tensor:
    """(B, B) bool: the pair must never be a negative (itself, or the same findings)."""
    jaccard = findings_jaccard(source, features)
    eye = torch.eye(jaccard.shape[0], dtype=torch.bool, device=jaccard.device)
    return eye | ((jaccard >= threshold) if source != "none" else eye)


class ITM(Objective):
    Config = ITMConfig
    requires = frozenset({Need.IMAGE_TOKENS, Need.TEXT_TOKENS, Need.IMAGE_EMBED, Need.TEXT_EMBED})

    def __init__(self, cfg: ITMConfig, dims):
        super().__init__(cfg, dims)
        if cfg.fusion not in ("attention", "tucker") or cfg.findings_from not in FINDINGS_SOURCES:
            raise ValueError(f"itm: fusion {cfg.fusion!r} (attention | tucker), findings_from "
                             f"{cfg.findings_from!r} ({' | '.join(FINDINGS_SOURCES)})")
        self.requires = self.requires | findings_needs(cfg.findings_from)
        if cfg.fusion == "attention":
            self.text_in = nn.Linear(dims.text_width, cfg.width)
            self.image_in = nn.Linear(dims.image_token_width, cfg.width)
            self.fusion = cross_attention_stack(cfg.width, cfg.heads, cfg.layers)
        else:
            self.fusion = TuckerFusion([dims.image_width, dims.text_width], cfg.width, cfg.tucker_hidden,
                                       cfg.tucker_rank)
        self.head = nn.Linear(cfg.width, 2)

    def match_logits(self, features, image_rows: Tensor, text_rows: Tensor) -> Tensor:
        """(N, 2) not-match/match logits of the pairs (image_rows[n], text_rows[n])."""
        if self.cfg.fusion == "tucker":
            fused = self.fusion(features.image_global[image_rows], features.text_global[text_rows])
            return self.head(fused)
        # Project the B reports/images once, then gather the 3B pairs (same values, a third
        # of the projection work and a narrower gather backward).
        text = self.text_in(features.text_tokens)[text_rows]
        image = self.image_in(features.image_tokens)[image_rows]
        padding = ~features.attention_mask[text_rows]
        fused = self.fusion(text, image, tgt_key_padding_mask=padding)
        return self.head(fused[:, 0])

    def forward(self, features, ctx):
        cfg = self.cfg
        image, text = features.image_embed, features.text_embed
        size = image.shape[0]
        forbidden = same_findings(cfg.findings_from, features, cfg.same_findings_threshold)
        generator = step_generator(ctx, image.device, cfg.seed)
        similarity = image @ text.t()
        negative_text, has_text = sample_hard_negatives(similarity, forbidden, generator, cfg.temperature)
        negative_image, has_image = sample_hard_negatives(similarity.t(), forbidden.t(), generator,
                                                          cfg.temperature)
        rows = torch.arange(size, device=image.device)
        image_rows = torch.cat([rows, rows, negative_image])
        text_rows = torch.cat([rows, negative_text, rows])
        labels = (torch.arange(3 * size, device=image.device) < size).long()    # 1 = the B positives
        used = torch.cat([torch.ones(size, dtype=torch.bool, device=image.device), has_text, has_image])
        logits = at_least_fp32(self.match_logits(features, image_rows, text_rows))
        per_pair = F.cross_entropy(logits, labels, reduction="none") * used
        loss = per_pair.sum() / used.float().sum()
        with torch.no_grad():
            accuracy = ((logits.argmax(1) == labels) & used).float().sum() / used.float().sum()
        return ObjectiveOutput(terms={"itm": loss},
                               metrics={"acc": accuracy, "negatives_found": (has_text.float().mean()
                                                                             + has_image.float().mean()) / 2})
