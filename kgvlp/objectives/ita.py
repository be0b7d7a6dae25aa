"""MGCA instance-wise image–text alignment (ITA).

L_ITA = ½ [CE(s, I) + CE(sᵀ, I)],  s = v·tᵀ / τ₁  (MGCA eq. 1–3; v = image_embed,
t = text_embed, both 128-d and L2-normalised by the shared projection heads).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kgvlp.models.features import Need
from kgvlp.modules.contrastive import columns, own_columns
from kgvlp.modules.distributed import at_least_fp32
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class ITAConfig(ObjectiveConfig):
    temperature: float = 0.07      # τ₁, MGCA paper and code
    gather: bool = True            # negatives from the global batch; false = per-rank (official)
    official_quirks: bool = False  # official: the two directions summed (not averaged), no gather


class ITA(Objective):
    Config = ITAConfig
    requires = frozenset({Need.IMAGE_EMBED, Need.TEXT_EMBED})

    def forward(self, features, ctx):
        image, text = features.image_embed, features.text_embed
        gather = self.cfg.gather and not self.cfg.official_quirks
        # Local rows against global columns (kgvlp.modules.contrastive).
        all_image, all_text = columns(image, gather), columns(text, gather)
        targets = own_columns(image.shape[0], gather, image.device)
        logits_i2t = image @ all_text.t() / self.cfg.temperature
        logits_t2i = text @ all_image.t() / self.cfg.temperature
        loss_i2t = F.cross_entropy(at_least_fp32(logits_i2t), targets)
        loss_t2i = F.cross_entropy(at_least_fp32(logits_t2i), targets)
        scale = 1.0 if self.cfg.official_quirks else 0.5
        with torch.no_grad():
            accuracy = (logits_i2t.argmax(dim=1) == targets).float().mean()
        return ObjectiveOutput(terms={"ita": scale * (loss_i2t + loss_t2i)},
                               metrics={"acc_i2t": accuracy})
