"""Learning rate as a pure function of the optimizer step (so resume needs no scheduler state).

Without stages: linear warm-up over ``warmup_ratio`` of the steps, then cosine to ``min_lr``
(MGCA's LinearWarmupCosineAnnealingLR). With stages: the same shape inside each stage, with
the stage's own peak lr and warm-up (PRIOR restarts the schedule per stage).
"""
from __future__ import annotations

import math

from kgvlp.objectives.objective_set import StageSpan, stage_at


def warmup_cosine(step: int, total: int, peak: float, floor: float, warmup_ratio: float) -> float:
    warmup = int(round(warmup_ratio * total))
    if warmup > 0 and step < warmup:
        return floor + (peak - floor) * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_at(step: int, max_steps: int, lr: float, min_lr: float, warmup_ratio: float,
          stages: list[StageSpan]) -> float:
    stage = stage_at(stages, step)
    if stage is None:
        return warmup_cosine(step, max_steps, lr, min_lr, warmup_ratio)
    peak = stage.lr if stage.lr is not None else lr
    ratio = stage.warmup_ratio if stage.warmup_ratio is not None else warmup_ratio
    return warmup_cosine(step - stage.start, stage.end - stage.start, peak, min_lr, ratio)
