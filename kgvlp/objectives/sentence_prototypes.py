"""PRIOR's sentence prototype bank loss (Cheng et al., ICCV 2023, §3.3; official
``modules/spb.py: SPB.forward``).

L_spb = mean |ŝ − s|₁ over the real sentences' D features, ŝ = Gumbel-softmax(s·Pᵀ/τ)·P
(the bank service, ``kgvlp/modules/sentence_bank.py``). Gradients reach both the
prototypes P and, through s, the text encoder (code: nothing detached).

Metrics (the "dead prototypes" failure): ``used`` prototypes chosen (argmax) by at least
one sentence of this batch, ``perplexity`` exp(H) of the batch's mean assignment (K when
uniform, 1 when collapsed), ``dead`` prototypes unassigned for ``dead_after`` steps
(service buffers; the per-prototype ``usage`` and ``idle_steps`` vectors are checkpointed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kgvlp.models.features import Need
from kgvlp.modules.sentence_bank import assignment_counts
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput


@dataclass
class SentencePrototypesConfig(ObjectiveConfig):
    pass                           # the bank's options live in model.services.sentence_bank


class SentencePrototypes(Objective):
    Config = SentencePrototypesConfig
    requires = frozenset({Need.PROTOTYPE_BANK})

    def forward(self, features, ctx):
        view = features.extras[Need.PROTOTYPE_BANK.value].for_stage(ctx.stage)
        mask = view.mask
        error = (view.prototypes - view.sentences).abs().mean(-1)            # (B, S)
        loss = (error * mask).sum() / mask.sum().clamp(min=1)
        return ObjectiveOutput(terms={"reconstruction": loss}, metrics=self._usage(view))

    @staticmethod
    @torch.no_grad()
    def _usage(view) -> dict:
        assignment, mask = view.assignment.float(), view.mask                # (B, S, K), (B, S)
        chosen = assignment_counts(assignment, mask, assignment.shape[-1])
        real = mask[..., None].to(assignment.dtype)
        mean = (assignment * real).sum((0, 1)) / real.sum().clamp(min=1)     # 0 without sentences
        entropy = -(mean * mean.clamp(min=1e-12).log()).sum()
        return {"used": (chosen > 0).sum().float(), "perplexity": entropy.exp(),
                "dead": (view.idle_steps >= view.dead_after).sum().float()}
