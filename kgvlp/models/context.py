"""StepContext: what the engine tells the model about the current optimizer step."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepContext:
    """Where training stands; the same object is passed to forward and after_step.

    step: optimizer steps taken so far; epoch: fractional epochs done; stage: current stage
    name ('' when the experiment has no stages); lr: this step's learning rate; weights:
    each objective's weight at this step, resolved by the engine's schedule (stage weight,
    start step, warm-up) — None outside training (tests, feature extraction), where each
    objective's configured ``weight`` applies.
    """
    step: int = 0
    epoch: float = 0.0
    steps_per_epoch: int = 1
    max_steps: int = 1
    stage: str = ""
    lr: float = 0.0
    weights: dict[str, float] | None = None
