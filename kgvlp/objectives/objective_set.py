"""ObjectiveSet: builds the enabled objectives, schedules their weights, sums the loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kgvlp.config.schema import StageConfig
from kgvlp.data.batch import Batch
from kgvlp.models.features import Features, Need
from kgvlp.objectives.base import ModelDims, ObjectiveConfig, StepContext


@dataclass
class StageSpan:
    """A stage resolved to optimizer steps: [start, end)."""
    name: str
    start: int
    end: int
    lr: float | None
    warmup_ratio: float | None
    weights: dict[str, float]


def resolve_stages(stages: list[StageConfig], steps_per_epoch: int) -> list[StageSpan]:
    spans, start = [], 0
    for stage in stages:
        if (stage.steps is None) == (stage.epochs is None):
            raise ValueError(f"trainer.stages[{stage.name}]: give exactly one of steps or epochs")
        length = stage.steps if stage.steps is not None else round(stage.epochs * steps_per_epoch)
        spans.append(StageSpan(stage.name, start, start + int(length), stage.lr,
                               stage.warmup_ratio, dict(stage.weights)))
        start += int(length)
    return spans


def stage_at(spans: list[StageSpan], step: int) -> StageSpan | None:
    """The stage containing ``step`` (the last one once all have ended)."""
    for span in spans:
        if span.start <= step < span.end:
            return span
    return spans[-1] if spans else None


def enabled_objectives(configs: dict[str, ObjectiveConfig], stages: list[StageSpan] | None = None) -> list[str]:
    """Names of the objectives with weight > 0 in the config or in some stage."""
    return [name for name, cfg in configs.items()
            if cfg.weight > 0 or any(s.weights.get(name, 0) > 0 for s in stages or [])]


class ObjectiveSet(nn.Module):
    """Owns the enabled objectives (weight > 0 somewhere) as a ModuleDict keyed by name."""

    def __init__(self, configs: dict[str, ObjectiveConfig], registry: dict, dims: ModelDims,
                 stages: list[StageSpan] | None = None):
        super().__init__()
        self.configs = configs
        self.stages = stages or []
        enabled = enabled_objectives(configs, self.stages)
        self.objectives = nn.ModuleDict({name: registry[name](configs[name], dims) for name in enabled})

    @property
    def requires(self) -> frozenset[Need]:
        needs: set[Need] = set()
        for objective in self.objectives.values():
            needs |= objective.requires
        return frozenset(needs)

    def weight(self, name: str, step: int) -> float:
        """Schedule: the stage's weight (else the config's), 0 before start_step, then a
        linear warm-up over warmup_steps."""
        cfg = self.configs[name]
        stage = stage_at(self.stages, step)
        base = stage.weights.get(name, 0.0) if stage is not None else cfg.weight
        if step < cfg.start_step:
            return 0.0
        if cfg.warmup_steps > 0:
            base *= min(1.0, (step - cfg.start_step + 1) / cfg.warmup_steps)
        return base

    def forward(self, features: Features, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted total and logs: ``loss/<objective>/<term>`` raw, ``weighted/<objective>``.

        An objective whose scheduled weight is 0 right now is still computed (× 0): every
        parameter then gets a gradient on every step, which keeps ZeRO's reductions
        identical on all ranks; the raw terms stay visible in the logs.
        """
        total = torch.zeros((), device=batch.images.device)
        logs: dict[str, Tensor] = {}
        for name, objective in self.objectives.items():
            out = objective(features, batch, ctx)
            objective_loss = sum(out.terms.values())
            weight = self.weight(name, ctx.step)
            total = total + weight * objective_loss
            for term, value in out.terms.items():
                logs[f"loss/{name}/{term}"] = value.detach()
            for metric, value in out.metrics.items():
                logs[f"metric/{name}/{metric}"] = value.detach()
            logs[f"weighted/{name}"] = (weight * objective_loss).detach()
        logs["loss/total"] = total.detach()
        return total, logs

    def after_step(self, ctx: StepContext) -> None:
        for objective in self.objectives.values():
            objective.after_step(ctx)
