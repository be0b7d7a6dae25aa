"""The shipped PRIOR experiment files load, and their objective sets build and run one step
at tiny sizes (the composition with MGCA needs no code)."""
from __future__ import annotations

import pytest
import torch

from kgvlp.config import load_experiment
from kgvlp.models.vlp import VLPModel
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.base import StepContext
from kgvlp.objectives.objective_set import resolve_stages
from prior.helpers import prior_batch

TINY = {"mgca_prior_vitb16": ["model.image.name=vit_test", "model.image.image_size=64", "model.text.path=null",
                              "model.text.num_layers=2", "model.text.max_length=32", "objectives.cta.hidden_dim=32",
                              "objectives.cpa.num_prototypes=8", "model.services.sentence_bank.size=8",
                              "model.image.weights=null"],
        "prior_resnet50": ["model.image.name=resnet_test", "model.image.image_size=64", "model.text.path=null",
                           "model.text.num_layers=2", "model.text.max_length=32", "model.image.projection_dim=32",
                           "model.text.projection_dim=32", "model.services.sentence_bank.size=8",
                           "objectives.prototype_generation.num_layers=1", "objectives.prototype_generation.num_heads=4"]}


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_builds_and_every_objective_gives_finite_terms(name, tokenizer, reports):
    cfg = load_experiment(f"configs/experiments/{name}.yaml", TINY[name]).config
    torch.manual_seed(0)
    model = VLPModel(cfg.model, cfg.objectives, REGISTRY, resolve_stages(cfg.trainer.stages, 1))
    batch = prior_batch(tokenizer, reports)

    loss, logs = model(batch, StepContext(step=0, stage="stage3" if cfg.trainer.stages else ""))

    assert set(model.objectives.objectives) == set(cfg.objectives)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for k, v in logs.items() if k.startswith("loss/"))
