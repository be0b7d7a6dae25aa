"""Services: state shared by objectives (EMA encoders, memory banks, masked views, knowledge).

A service is an ``nn.Module`` owned once by the model (under ``model.services.<name>``) that
- ``provides`` one ``Need``: ``provide(model, batch, features)`` returns the typed object
  stored in ``features.extras[need.value]``, computed sample by sample (no BatchNorm over
  the batch, no state staged): under gradient accumulation it runs once per micro-batch,
  without a graph, and again with one (the same random draws replayed);
- ``complete(model, features, value)`` finishes that object once per optimizer step on the
  whole batch (all micro-batches concatenated, ``Features.concat``): what couples samples
  (a head's BatchNorm) and what it stages for ``after_step`` (queue or bank writes) go here;
- the typed object names its fields that are not one row per sample in a
  ``batch_independent`` ClassVar (a bank, a queue view; see ``Features.concat``);
- ``requires`` other needs it reads from the features (computed before it runs);
- has a ``Config`` dataclass: the YAML schema of ``model.services.<name>``;
- advances its state in ``after_step(model, ctx)`` (once per optimizer step).

The model is passed to the methods, never stored, so modules are registered exactly once.
Registration is the explicit dict in ``kgvlp/modules/registry.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from kgvlp.models.features import Features, Need


@dataclass
class ServiceConfig:
    """Base of every service's Config (no shared fields yet)."""


class Service(nn.Module):
    Config: ClassVar[type] = ServiceConfig
    provides: ClassVar[Need]
    requires: ClassVar[frozenset[Need]] = frozenset()

    def __init__(self, cfg: ServiceConfig, model: nn.Module):
        super().__init__()
        self.cfg = cfg

    def provide(self, model: nn.Module, batch, features: Features) -> Any:
        raise NotImplementedError

    def complete(self, model: nn.Module, features: Features, value: Any) -> Any:
        """``value`` (from ``provide``, concatenated over micro-batches) finished on the whole
        batch. Default: as provided."""
        return value

    def after_step(self, model: nn.Module, ctx) -> None:
        """Advance state once per optimizer step. Default: nothing."""
