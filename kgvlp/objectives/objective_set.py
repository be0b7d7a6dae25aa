"""ObjectiveSet: builds the enabled objectives and applies every weight — the one place
where an objective's unweighted terms are weighted and summed into the loss."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from kgvlp.models.context import StepContext
from kgvlp.models.features import Features, Need
from kgvlp.objectives.base import ModelDims, Objective, ObjectiveConfig


def zero_gradient(*modules: nn.Module, device: torch.device) -> Tensor:
    """0 × Σ of the trainable parameters of ``modules``: added to the loss of a step that
    skips them, it gives each the zero gradient that a term computed × 0 gave, so every rank
    reduces the same parameters and the optimizer sees what it saw before (zeros, not None)."""
    anchors = [0.0 * p.sum() for module in modules for p in module.parameters() if p.requires_grad]
    return torch.stack(anchors).sum() if anchors else torch.zeros((), device=device)


def partitioned(module: nn.Module) -> bool:
    """Whether ZeRO-3 partitions the parameters (each is gathered only inside its module's
    forward, so a skipped module's parameters cannot be touched outside it)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def enabled_objectives(configs: dict[str, ObjectiveConfig],
                       stage_weights: Iterable[Mapping[str, float]] = ()) -> list[str]:
    """Names of the objectives with weight > 0 in the config or in some stage's weights."""
    stage_weights = list(stage_weights)
    return [name for name, cfg in configs.items()
            if cfg.weight > 0 or any(weights.get(name, 0) > 0 for weights in stage_weights)]


class ObjectiveSet(nn.Module):
    """Owns the enabled objectives as a ModuleDict keyed by name (``enabled``: the names to
    build; default those with weight > 0 in ``configs``)."""

    def __init__(self, configs: dict[str, ObjectiveConfig], registry: dict, dims: ModelDims,
                 enabled: Iterable[str] | None = None):
        super().__init__()
        self.configs = configs
        names = enabled_objectives(configs) if enabled is None else list(enabled)
        self.objectives = nn.ModuleDict({name: registry[name](configs[name], dims) for name in names})
        self._check_readers()

    def _check_readers(self) -> None:
        """An objective reading another's published values runs after it (objectives run in order)."""
        names = list(self.objectives)
        for position, (name, objective) in enumerate(self.objectives.items()):
            for owner in objective.reads_from:
                if owner not in names[:position]:
                    raise ValueError(f"objectives.{name}.official_quirks reads values {owner} computes in the "
                                     f"same step (as the official code shares them): enable {owner} and list it "
                                     f"before {name} under 'objectives' (order now: {', '.join(names)})")

    @property
    def requires(self) -> frozenset[Need]:
        needs: set[Need] = set()
        for objective in self.objectives.values():
            needs |= objective.requires
        return frozenset(needs)

    def weight(self, name: str, ctx: StepContext) -> float:
        """The step's weight from the engine's schedule (``ctx.weights``), else the config's."""
        return ctx.weights[name] if ctx.weights is not None else self.configs[name].weight

    def active(self, ctx: StepContext) -> list[str]:
        """The objectives computed this step. In training (the engine's ``ctx.weights``) those
        of weight ≠ 0: the weight is a function of the step, so every rank skips the same ones.
        Without a schedule (tests, feature extraction) and under ZeRO-3, all of them."""
        if ctx.weights is None or partitioned(self):
            return list(self.objectives)
        return [name for name in self.objectives if self.weight(name, ctx) != 0]

    def requires_of(self, names: Iterable[str]) -> frozenset[Need]:
        """The features the objectives ``names`` read."""
        return frozenset().union(*(self.objectives[name].requires for name in names))

    @staticmethod
    def objective_loss(objective: Objective, terms: dict[str, Tensor]) -> Tensor:
        """Σ terms, each times its per-term weight (``Objective.term_weights``) if it has one."""
        fields = objective.term_weights
        return sum(getattr(objective.cfg, fields[term]) * value if term in fields else value
                   for term, value in terms.items())

    def forward(self, features: Features, ctx: StepContext,
                active: list[str] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted total and logs: ``loss/<objective>/<term>`` raw, ``weighted/<objective>``.

        An objective left out of ``active`` (default ``self.active(ctx)``: weight 0 at this
        step of training) is not computed: it logs only ``weighted/<objective>`` = 0, and
        ``zero_gradient`` gives its parameters the zero gradients a term computed × 0 gave.
        """
        active = self.active(ctx) if active is None else active
        total = torch.zeros((), device=features.device)
        logs: dict[str, Tensor] = {}
        for name, objective in self.objectives.items():
            if name not in active:
                total = total + zero_gradient(objective, device=total.device)
                logs[f"weighted/{name}"] = total.new_zeros(())
                continue
            out = objective(features, ctx)
            objective_loss = self.objective_loss(objective, out.terms)
            weight = self.weight(name, ctx)
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
