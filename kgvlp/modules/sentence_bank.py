"""PRIOR's sentence prototype memory bank as a service (provides ``Need.PROTOTYPE_BANK``).

PRIOR (Cheng et al., ICCV 2023, §3.3; official ``modules/spb.py``): K learned prototypes
(``nn.Embedding(K, D)``, K = 512, D = 768). A sentence feature s is scored against every
prototype with an unnormalised dot product, z = s·Pᵀ; a soft Gumbel-softmax sample
a = softmax((z + g)/τ), τ = 0.9, mixes the prototypes into ŝ = a·P. The bank's own loss
(``sentence_prototypes``) is |ŝ − s|₁; the generation objective reads the same bank.

The sentence features are the model's ``Features.sentences``, the means of the text tokens
of each sentence (``kgvlp.modules.pooling.sentence_means``, computed once per step: with
``model.text.projection_dim`` these are PRIOR's projected tokens). One Gumbel sample per
step is drawn here once, so every objective reading the bank sees the same draw.

State besides the prototypes, all buffers (checkpointed): ``usage`` (K,) running share of
sentences assigned (argmax) to each prototype, and ``idle_steps`` (K,) optimizer steps
since a prototype was last assigned. Counts are summed over ranks in ``after_step``. With
``reinit_dead: true`` a prototype idle for ``dead_after`` steps is re-drawn from a random
current sentence feature (same draw on every rank), off by default (PRIOR has no re-init).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.models.features import Features, Need
from kgvlp.modules.distributed import all_reduce_sum, at_least_fp32, gather_no_grad, modifiable
from kgvlp.modules.pooling import masked_mean
from kgvlp.modules.service import Service, ServiceConfig


@dataclass
class SentenceBankConfig(ServiceConfig):
    size: int = 512                # K: PRIOR paper + code (spb_k)
    temperature: float = 0.9       # Gumbel-softmax τ: code SPB(temp=0.9), temp_decay: fixed
    usage_momentum: float = 0.99   # ours: running share of assignments per prototype
    dead_after: int = 100          # ours: a prototype unassigned this many steps counts as dead
    reinit_dead: bool = False      # ours: re-draw dead prototypes from sentence features
    # true: in ``cut_stages`` every reader of the bank (alignment, bank loss, generation) sees
    # only each report's first ``cut_to`` sentences, as the code cuts stage 3's sentence
    # features for all of them (models/prior.py:510). Ours: only generation cuts (its Q).
    official_quirks: bool = False
    cut_stages: List[str] = field(default_factory=lambda: ["stage3"])
    cut_to: int = 16               # code: num_queries (set it to prototype_generation.num_queries)


@dataclass
class SentenceBankView:
    """One step's reading of the bank (B reports, S sentence slots, K prototypes, D width).

    sentences:  (B, S, D) sentence features (mean of each sentence's tokens), 0 on padding
    mask:       (B, S) bool, a real sentence
    logits:     (B, S, K) s·Pᵀ, unnormalised (PRIOR's ``dist``)
    assignment: (B, S, K) soft Gumbel-softmax weights (one draw per step)
    prototypes: (B, S, D) assignment·P, the soft prototype of each sentence
    bank:       (K, D) the prototype rows (the parameter itself: gradients reach it)
    usage / idle_steps: (K,) the service's buffers (no gradient); dead_after: steps
          unassigned after which a prototype counts as dead
    mix:  (…, D) → (…, D) a fresh Gumbel-soft mixture of prototypes for any features
    pool: (B, S, D), (B, S) → (B, D) the report pooling of the text encoder (its sentence
          attention pool, or a masked mean when the encoder pools [CLS])
    cut_stages / cut_to: stages whose readers see only the first ``cut_to`` sentence slots
          (``official_quirks``); read through ``for_stage``
    """
    batch_independent: ClassVar[frozenset[str]] = frozenset({"bank", "usage", "idle_steps"})
    sentences: Tensor
    mask: Tensor
    logits: Tensor
    assignment: Tensor
    prototypes: Tensor
    bank: Tensor
    usage: Tensor
    idle_steps: Tensor
    dead_after: int
    mix: Callable[[Tensor], Tensor]
    pool: Callable[[Tensor, Tensor], Tensor]
    cut_stages: tuple[str, ...] = ()
    cut_to: int = 0

    def for_stage(self, stage: str) -> "SentenceBankView":
        """The reading an objective sees in ``stage``: the first ``cut_to`` slots in a cut
        stage (the draw of those slots is the same, each slot's noise being its own)."""
        if stage not in self.cut_stages:
            return self
        n = self.cut_to
        return replace(self, sentences=self.sentences[:, :n], mask=self.mask[:, :n], logits=self.logits[:, :n],
                       assignment=self.assignment[:, :n], prototypes=self.prototypes[:, :n], cut_stages=())


def assignment_counts(assignment: Tensor, mask: Tensor, size: int) -> Tensor:
    """(K,) how many real sentences (``mask`` (B, S)) pick each prototype as their argmax of
    ``assignment`` (B, S, K); one fixed-shape scatter (bincount of a masked selection would
    make the host wait for the selection's size)."""
    chosen = assignment.argmax(-1).flatten()
    weights = mask.flatten().to(assignment.dtype)
    return assignment.new_zeros(size).scatter_add_(0, chosen, weights)


class SentenceBank(Service):
    Config = SentenceBankConfig
    provides = Need.PROTOTYPE_BANK
    requires = frozenset({Need.SENTENCES})

    def __init__(self, cfg: SentenceBankConfig, model: nn.Module):
        super().__init__(cfg, model)
        self.prototypes = nn.Embedding(cfg.size, model.dims.text_width)   # N(0, 1), as PRIOR
        self.register_buffer("usage", torch.full((cfg.size,), 1.0 / cfg.size))
        self.register_buffer("idle_steps", torch.zeros(cfg.size, dtype=torch.long))
        self._counts: dict[str, Tensor] | None = None
        self._sentences: tuple[Tensor, Tensor] | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "prototypes.weight"
        if key in state_dict and state_dict[key].shape != self.prototypes.weight.shape:
            raise ValueError(f"sentence bank: the checkpoint's bank {key} has shape "
                             f"{tuple(state_dict[key].shape)} (size × width) but this model's is "
                             f"{tuple(self.prototypes.weight.shape)}; set model.services.sentence_bank.size "
                             f"to {state_dict[key].shape[0]}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mix(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(…, D) → logits (…, K), soft assignment (…, K), mixture (…, D)."""
        bank = self.prototypes.weight
        logits = features @ bank.t()
        assignment = F.gumbel_softmax(at_least_fp32(logits), tau=self.cfg.temperature, hard=False, dim=-1)
        return logits, assignment, assignment.to(bank.dtype) @ bank

    def provide(self, model, batch, features: Features) -> SentenceBankView:
        sentences, mask = features.sentences, features.sentence_mask
        logits, assignment, prototypes = self.mix(sentences)
        pool = model.text_encoder.sentence_pool or masked_mean
        cut_stages = tuple(self.cfg.cut_stages) if self.cfg.official_quirks else ()
        return SentenceBankView(sentences=sentences, mask=mask, logits=logits, assignment=assignment,
                                prototypes=prototypes, bank=self.prototypes.weight, usage=self.usage,
                                idle_steps=self.idle_steps, dead_after=self.cfg.dead_after,
                                mix=lambda x: self.mix(x)[2], pool=pool, cut_stages=cut_stages,
                                cut_to=self.cfg.cut_to)

    def complete(self, model, features: Features, value: SentenceBankView) -> SentenceBankView:
        """Stage the whole batch's argmax assignments (and sentences, for re-initialisation)
        for ``after_step``: once per optimizer step, all micro-batches included. A quirk bank
        stages the cut slots' counts as well; ``after_step`` knows the stage and picks."""
        if self.training:
            counts = assignment_counts(value.assignment.detach(), value.mask, self.cfg.size)
            self._counts = {"all": counts.to(self.usage.dtype)}
            if value.cut_stages:
                cut = value.for_stage(value.cut_stages[0])
                self._counts["cut"] = assignment_counts(cut.assignment.detach(), cut.mask,
                                                        self.cfg.size).to(self.usage.dtype)
            self._sentences = (value.sentences.detach(), value.mask)
        return value

    @torch.no_grad()
    def after_step(self, model, ctx) -> None:
        if self._counts is None:
            return
        # In a cut stage the counters count what the bank's readers saw: the first cut_to slots.
        cut = ctx.stage in self.cfg.cut_stages and "cut" in self._counts
        counts = all_reduce_sum(self._counts["cut" if cut else "all"])
        share = counts / counts.sum().clamp(min=1)
        self.usage.lerp_(share, 1 - self.cfg.usage_momentum)
        self.idle_steps.copy_(torch.where(counts > 0, 0, self.idle_steps + 1))
        if self.cfg.reinit_dead:
            self._reinit_dead(ctx.step)
        self._counts = None
        self._sentences = None

    def _reinit_dead(self, step: int) -> None:
        """Each dead prototype takes the feature of a uniformly drawn real sentence of the
        global batch. Fixed shapes throughout (a draw for every prototype, kept where dead),
        so the host never waits for how many are dead or real."""
        sentences, mask = (gather_no_grad(t) for t in self._sentences)
        candidates, real = sentences.flatten(0, 1), mask.flatten()
        num_real = real.sum()
        dead = (self.idle_steps >= self.cfg.dead_after) & (num_real > 0)
        # The same draw on every rank: a generator seeded by the step, on the bank's device.
        generator = torch.Generator(device=candidates.device).manual_seed(step)
        draw = torch.rand(self.cfg.size, generator=generator, device=candidates.device)
        nth_real = (draw * num_real).long().clamp(max=(num_real - 1).clamp(min=0))
        picks = torch.searchsorted(real.long().cumsum(0), nth_real + 1)    # position of that sentence
        weight = self.prototypes.weight
        with modifiable(weight):
            replacement = candidates[picks.clamp(max=len(candidates) - 1)].to(weight.dtype)
            weight.data.copy_(torch.where(dead[:, None], replacement, weight.data))
        self.idle_steps.masked_fill_(dead, 0)


def uses_bank(prototype_stages: list[str]) -> frozenset[Need]:
    """The bank is needed by an objective that reads prototypes in some stages."""
    return frozenset({Need.PROTOTYPE_BANK}) if prototype_stages else frozenset()


def report_sentences(features: Features, prototype_stages: list[str], stage: str) -> tuple[Tensor, Tensor]:
    """(B, S, D) sentence features and (B, S) mask: the bank's soft prototypes during
    ``prototype_stages`` (PRIOR stages 2–3 align prototypes), else the encoder's."""
    if stage in prototype_stages:
        view = features.extras[Need.PROTOTYPE_BANK.value].for_stage(stage)
        return view.prototypes, view.mask
    return features.sentences, features.sentence_mask
