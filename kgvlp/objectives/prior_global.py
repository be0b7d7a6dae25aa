"""PRIOR's global image–report alignment (Cheng et al., ICCV 2023, eq. 1; official
``models/prior.py: global_alignment_loss``).

L_g = ½ [CE(s·v·tᵀ, I) + CE(s·t·vᵀ, I)],  v = image_global, t = text_global (both
L2-normalised here), s = exp(log_scale) learnable, initialised at 1/0.01 (CLIP's InfoNCE
over the global batch: every rank's rows against all ranks' columns).

With ``prototype_stages`` the report vector in those stages is the text pooling over the
bank's soft prototypes (PRIOR stages 2–3: ``get_global_text_representation(proto_…)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from kgvlp.models.features import Need
from kgvlp.modules.contrastive import LogitScale, clip_loss
from kgvlp.modules.sentence_bank import uses_bank
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from kgvlp.objectives.shared import publish


@dataclass
class PriorGlobalConfig(ObjectiveConfig):
    temperature: float = 0.01      # initial τ (scale 1/τ = 100): code config temperature 0.01
    max_scale: float = 100.0       # CLIP's clamp of the scale; official_quirks: no clamp
    gather: bool = True            # negatives from all ranks: code (SyncFunction all-gather)
    # Stages whose report vector pools the bank's prototypes (PRIOR: [stage2, stage3]).
    prototype_stages: List[str] = field(default_factory=list)
    official_quirks: bool = False  # true: the scale is never clamped (code)


class PriorGlobal(Objective):
    Config = PriorGlobalConfig
    shared_width = True   # compares image and text features directly

    def __init__(self, cfg: PriorGlobalConfig, dims):
        super().__init__(cfg, dims)
        self.requires = frozenset({Need.IMAGE_GLOBAL, Need.TEXT_GLOBAL}) | uses_bank(cfg.prototype_stages)
        self.logit_scale = LogitScale(cfg.temperature, None if cfg.official_quirks else cfg.max_scale)

    def forward(self, features, ctx):
        text = features.text_global
        if ctx.stage in self.cfg.prototype_stages:
            view = features.extras[Need.PROTOTYPE_BANK.value].for_stage(ctx.stage)
            text = view.pool(view.prototypes, view.mask)
        scale = self.logit_scale()
        publish(features, "prior_global", "logit_scale", scale)   # prototype_generation's quirk shares it
        loss = clip_loss(features.image_global, text, scale, self.cfg.gather)
        return ObjectiveOutput(terms={"global": loss}, metrics={"logit_scale": scale.detach()})

    def after_step(self, ctx) -> None:
        self.logit_scale.clamp()
