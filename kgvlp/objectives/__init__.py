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
from kgvlp.objectives.category_contrast import CategoryContrast
from kgvlp.objectives.itm import ITM
from kgvlp.objectives.mlip_global import MLIPGlobal
from kgvlp.objectives.text_swap import TextSwap
from kgvlp.objectives.tkp_alignment import TKPAlignment
from kgvlp.objectives.masked_reconstruction import MaskedReconstruction
from kgvlp.objectives.prior_global import PriorGlobal
from kgvlp.objectives.prior_local import PriorLocal
from kgvlp.objectives.prototype_generation import PrototypeGeneration
from kgvlp.objectives.sentence_prototypes import SentencePrototypes

REGISTRY: dict[str, type[Objective]] = {
    "ita": ITA,
    "cta": CTA,
    "cpa": CPA,
    "mlip_global": MLIPGlobal,
    "tkp_alignment": TKPAlignment,
    "category_contrast": CategoryContrast,
    "itm": ITM,
    "text_swap": TextSwap,
    "prior_global": PriorGlobal,
    "prior_local": PriorLocal,
    "sentence_prototypes": SentencePrototypes,
    "masked_reconstruction": MaskedReconstruction,
    "prototype_generation": PrototypeGeneration,
}

__all__ = ["REGISTRY", "ModelDims", "Objective", "ObjectiveConfig", "ObjectiveOutput", "StepContext"]
