"""The explicit registry of objectives. Names are API: YAML keys, log keys, checkpoint keys.

To add an objective: write ``kgvlp/objectives/<name>.py`` (an ``Objective`` subclass with its
``Config``) and add one line here. Nothing is registered at import time anywhere else.
"""
from __future__ import annotations

from kgvlp.objectives.base import (ModelDims, Objective, ObjectiveConfig, ObjectiveOutput,
                                   StepContext)
from kgvlp.objectives.cpa import CPA
from kgvlp.objectives.cta import CTA
from kgvlp.objectives.ita import ITA

REGISTRY: dict[str, type[Objective]] = {
    "ita": ITA,
    "cta": CTA,
    "cpa": CPA,
}

__all__ = ["REGISTRY", "ModelDims", "Objective", "ObjectiveConfig", "ObjectiveOutput", "StepContext"]
