"""The objective plugin API.

An objective is an ``nn.Module`` with
- ``Config``: a dataclass holding all of its defaults (the YAML ``objectives.<name>`` schema);
- ``requires``: the features it reads (``kgvlp.models.features.Need``);
- ``__init__(cfg, dims)``: builds the modules it needs (heads, prototypes, decoders);
- ``forward(features, batch, ctx) -> ObjectiveOutput``: unweighted named loss terms;
- ``after_step(ctx)``: state that advances once per optimizer step (never in forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from kgvlp.data.batch import Batch
from kgvlp.models.features import Features, Need


@dataclass
class ObjectiveConfig:
    """Fields every objective has. ``weight`` 0 means the objective is not built."""
    weight: float = 1.0
    start_step: int = 0        # contributes nothing before this optimizer step
    warmup_steps: int = 0      # then its weight ramps linearly from 0 over this many steps


@dataclass
class ModelDims:
    """What an objective may know about the encoders when it builds its modules."""
    image_width: int           # width of image_global
    image_token_width: int     # width of image_tokens
    text_width: int            # width of text_global / tokens / words
    num_image_tokens: int      # P
    max_length: int            # L; word slots W = L - 2
    embed_dim: int = 128       # shared projection width
    image_size: int = 224      # input side in pixels (decoders that reconstruct the image)
    sentence_slots: int = 32   # S: sentences per report in sentence features

    @property
    def word_slots(self) -> int:
        return self.max_length - 2


@dataclass
class StepContext:
    """Where training stands; the same object is passed to forward and after_step.

    step: optimizer steps taken so far; epoch: fractional epochs done; stage: current
    stage name ('' when the experiment has no stages)."""
    step: int = 0
    epoch: float = 0.0
    steps_per_epoch: int = 1
    max_steps: int = 1
    stage: str = ""


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

    def __init__(self, cfg: ObjectiveConfig, dims: ModelDims):
        super().__init__()
        self.cfg = cfg
        self.dims = dims

    def forward(self, features: Features, batch: Batch, ctx: StepContext) -> ObjectiveOutput:
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Advance state once per optimizer step. Default: no state."""
