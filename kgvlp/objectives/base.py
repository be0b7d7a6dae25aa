"""The objective plugin API.

An objective is an ``nn.Module`` with
- ``Config``: a dataclass holding all of its defaults (the YAML ``objectives.<name>`` schema);
- ``requires``: the features it reads (``kgvlp.models.features.Need``);
- ``__init__(cfg, dims)``: builds the modules it needs (heads, prototypes, decoders);
- ``forward(features, ctx) -> ObjectiveOutput``: unweighted named loss terms, computed
  from the ``Features`` alone (an objective never sees the batch);
- ``term_weights``: terms whose relative weight is a Config field (applied, with the
  objective's scheduled weight, by the ObjectiveSet — never inside ``forward``);
- ``after_step(ctx)``: state that advances once per optimizer step (never in forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from kgvlp.models.context import StepContext
from kgvlp.models.features import Features, ModelDims, Need

__all__ = ["ModelDims", "Objective", "ObjectiveConfig", "ObjectiveOutput", "StepContext"]


@dataclass
class ObjectiveConfig:
    """Fields every objective has. ``weight`` 0 means the objective is not built."""
    weight: float = 1.0
    start_step: int = 0        # contributes nothing before this optimizer step
    warmup_steps: int = 0      # then its weight ramps linearly from 0 over this many steps


@dataclass
class ObjectiveOutput:
    """terms: unweighted loss terms (summed into the objective's loss); metrics: logged only."""
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    requires: ClassVar[frozenset[Need]] = frozenset()
    # True when the objective compares image and text features directly (no heads of its
    # own); the model then projects the image features to the text width if they differ.
    shared_width: ClassVar[bool] = False
    # term name → the Config field holding its relative weight (e.g. {"kl": "kl_weight"});
    # terms not listed count once. ``loss/<objective>/<term>`` logs the raw term.
    term_weights: ClassVar[dict[str, str]] = {}
    # objectives whose published values this one reads (``kgvlp.objectives.shared``): they
    # must be built and come before it; the ObjectiveSet checks it when it builds them.
    reads_from: tuple[str, ...] = ()

    def __init__(self, cfg: ObjectiveConfig, dims: ModelDims):
        super().__init__()
        self.cfg = cfg
        self.dims = dims

    def forward(self, features: Features, ctx: StepContext) -> ObjectiveOutput:
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Advance state once per optimizer step. Default: no state."""
