"""Values one objective computes in a step and another reads under ``official_quirks``.

PRIOR's code computes its stage-3 losses in one method, so some of them reuse another's
tensors: the reconstruction is conditioned on the local alignment's patch contexts, the
generation InfoNCE uses the global alignment's scale. kgvlp's objectives are separate
modules; to reproduce that coupling the owner publishes the tensor in
``features.extras["<owner>.<name>"]`` (graph included) and the reader takes it from there.
The ObjectiveSet runs objectives in their ``objectives:`` order, so the owner must come
first (checked when it builds them, from each reader's ``reads_from``) and run in the same
steps (checked here, when the value is read).
"""
from __future__ import annotations

from torch import Tensor

from kgvlp.models.features import Features


def publish(features: Features, owner: str, name: str, value: Tensor) -> None:
    features.extras[f"{owner}.{name}"] = value


def published(features: Features, owner: str, name: str, reader: str) -> Tensor:
    key = f"{owner}.{name}"
    if key not in features.extras:
        raise ValueError(f"{reader}.official_quirks reads {owner}'s {name} (the official code shares it), "
                         f"which is not computed in this step: enable {owner} in the same stages with a "
                         f"weight > 0 and list it before {reader} under 'objectives'")
    return features.extras[key]
