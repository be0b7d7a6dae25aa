"""The training schedule, resolved once from the config: stages, learning rate and each
objective's weight as pure functions of the optimizer step (so resume needs no scheduler
state). The trainer asks ``Schedule.at(step)`` for the step's ``StepContext`` and hands it
to the model; nothing else looks stages up.

Learning rate without stages: linear warm-up over ``warmup_ratio`` of the steps, then cosine
to ``min_lr``. With stages: the same shape inside each stage, with the stage's own peak lr,
warm-up and warm-up start (PRIOR restarts the schedule per stage). ``warmup_formula`` picks
where the warm-up line is sampled, W warm-up steps, a the start, p the peak, s = 0, 1, …:

- ``kgvlp``: a + (p − a)(s + 1)/W — the first step already learns; p at s = W − 1
- ``cosine_annealing_warmup`` (MGCA's ``CosineAnnealingWarmupRestarts``): a + (p − a)s/W — the
  first step runs at a; p at s = W
- ``pl_bolts`` (PRIOR's ``LinearWarmupCosineAnnealingLR``): a + (p − a)s/(W − 1) — the first
  step at a; p at s = W − 1

and the cosine from p to ``min_lr`` over the steps after W is the same in all three.
Objective weights: the stage's weight (else ``objectives.<name>.weight``), 0 before the
objective's ``start_step``, then a linear warm-up over its ``warmup_steps``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from kgvlp.config.schema import ExperimentConfig, StageConfig
from kgvlp.models.context import StepContext


@dataclass(frozen=True)
class StageSpan:
    """A stage resolved to optimizer steps: [start, end)."""
    name: str
    start: int
    end: int
    lr: float | None
    warmup_ratio: float | None
    weights: dict[str, float]
    warmup_start_lr: float | None = None
    reset_optimizer: bool = False    # a fresh optimizer state at ``start`` (PRIOR's code builds one per stage)


def resolve_stages(stages: list[StageConfig], steps_per_epoch: int) -> list[StageSpan]:
    spans, start = [], 0
    for stage in stages:
        if (stage.steps is None) == (stage.epochs is None):
            raise ValueError(f"trainer.stages[{stage.name}]: give exactly one of steps or epochs")
        length = stage.steps if stage.steps is not None else round(stage.epochs * steps_per_epoch)
        spans.append(StageSpan(stage.name, start, start + int(length), stage.lr,
                               stage.warmup_ratio, dict(stage.weights), stage.warmup_start_lr,
                               stage.reset_optimizer))
        start += int(length)
    return spans


def stage_at(spans: list[StageSpan], step: int) -> StageSpan | None:
    """The stage containing ``step`` (the last one once all have ended)."""
    for span in spans:
        if span.start <= step < span.end:
            return span
    return spans[-1] if spans else None


WARMUP_FORMULAS = ("kgvlp", "cosine_annealing_warmup", "pl_bolts")


def warmup_cosine(step: int, total: int, peak: float, floor: float, warmup_ratio: float,
                  start: float | None = None, formula: str = "kgvlp") -> float:
    """Linear warm-up from ``start`` (default ``floor``) to ``peak``, then cosine to ``floor``."""
    warmup = int(round(warmup_ratio * total))
    start = floor if start is None else start
    if warmup > 0 and step < warmup:
        if formula == "kgvlp":
            fraction = (step + 1) / warmup
        elif formula == "cosine_annealing_warmup":
            fraction = step / warmup
        elif formula == "pl_bolts":
            fraction = step / max(1, warmup - 1)
        else:
            raise ValueError(f"warmup_formula: expected one of {WARMUP_FORMULAS}, got {formula!r}")
        return start + (peak - start) * fraction
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_at(step: int, max_steps: int, lr: float, min_lr: float, warmup_ratio: float,
          stages: list[StageSpan], stage: StageSpan | None = None, warmup_start_lr: float | None = None,
          warmup_formula: str = "kgvlp") -> float:
    stage = stage if stage is not None else stage_at(stages, step)
    if stage is None:
        return warmup_cosine(step, max_steps, lr, min_lr, warmup_ratio, warmup_start_lr, warmup_formula)
    peak = stage.lr if stage.lr is not None else lr
    ratio = stage.warmup_ratio if stage.warmup_ratio is not None else warmup_ratio
    start = stage.warmup_start_lr if stage.warmup_start_lr is not None else warmup_start_lr
    return warmup_cosine(step - stage.start, stage.end - stage.start, peak, min_lr, ratio, start, warmup_formula)


@dataclass(frozen=True)
class ObjectiveTiming:
    """The schedule fields every ``objectives.<name>`` config has."""
    weight: float
    start_step: int
    warmup_steps: int

    def weight_at(self, step: int, stage: StageSpan | None, name: str) -> float:
        base = stage.weights.get(name, 0.0) if stage is not None else self.weight
        if step < self.start_step:
            return 0.0
        if self.warmup_steps > 0:
            base *= min(1.0, (step - self.start_step + 1) / self.warmup_steps)
        return base


@dataclass(frozen=True)
class Schedule:
    stages: list[StageSpan]
    steps_per_epoch: int
    max_steps: int
    lr: float
    min_lr: float
    warmup_ratio: float
    objectives: dict[str, ObjectiveTiming]
    warmup_start_lr: float | None = None
    warmup_formula: str = "kgvlp"

    @classmethod
    def from_config(cls, config: ExperimentConfig, steps_per_epoch: int) -> "Schedule":
        trainer = config.trainer
        stages = resolve_stages(trainer.stages, steps_per_epoch)
        if trainer.max_steps is not None:
            max_steps = trainer.max_steps
        elif stages:
            max_steps = stages[-1].end
        else:
            max_steps = max(1, int(round(trainer.max_epochs * steps_per_epoch)))
        timings = {name: ObjectiveTiming(cfg.weight, cfg.start_step, cfg.warmup_steps)
                   for name, cfg in config.objectives.items()}
        return cls(stages, steps_per_epoch, max_steps, trainer.lr, trainer.min_lr, trainer.warmup_ratio,
                   timings, trainer.warmup_start_lr, trainer.warmup_formula)

    def weights_at(self, step: int, stage: StageSpan | None = None) -> dict[str, float]:
        stage = stage if stage is not None else stage_at(self.stages, step)
        return {name: timing.weight_at(step, stage, name) for name, timing in self.objectives.items()}

    def at(self, step: int) -> StepContext:
        """The context of optimizer step ``step``: its stage, lr and objective weights."""
        stage = stage_at(self.stages, step)
        return StepContext(step=step, epoch=step / self.steps_per_epoch, steps_per_epoch=self.steps_per_epoch,
                           max_steps=self.max_steps, stage=stage.name if stage else "",
                           lr=lr_at(step, self.max_steps, self.lr, self.min_lr, self.warmup_ratio,
                                    self.stages, stage, self.warmup_start_lr, self.warmup_formula),
                           weights=self.weights_at(step, stage))

    def resets_optimizer(self, step: int) -> bool:
        """Whether step ``step`` starts a stage that begins with a fresh optimizer state (a
        pure function of the step, so a resume at the stage's first step resets too)."""
        stage = stage_at(self.stages, step)
        return stage is not None and stage.reset_optimizer and step == stage.start
