"""The shipped PRIOR experiment files load, and their objective sets build and run one step
at tiny sizes (the composition with MGCA needs no code)."""
from __future__ import annotations

import pytest
import torch

from kgvlp.config import load_experiment
from kgvlp.engine.schedule import Schedule
from kgvlp.models.build import build_model
from prior.helpers import prior_batch

TINY = {"mgca_prior_vitb16": ["model.image.name=vit_test", "model.image.image_size=64", "model.text.path=null",
                              "model.text.num_layers=2", "model.text.max_length=32", "objectives.cta.hidden_dim=32",
                              "objectives.cpa.num_prototypes=8", "model.services.sentence_bank.size=8",
                              "model.image.weights=null"],
        "prior_resnet50": ["model.image.name=resnet_test", "model.image.image_size=64", "model.text.path=null",
                           "model.text.num_layers=2", "model.text.max_length=32", "model.image.projection_dim=32",
                           "model.text.projection_dim=32", "model.services.sentence_bank.size=8",
                           "objectives.prototype_generation.num_layers=1",
                           "objectives.prototype_generation.num_heads=4"]}


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_builds_and_every_objective_gives_finite_terms(name, tokenizer, reports):
    cfg = load_experiment(f"configs/experiments/{name}.yaml", TINY[name]).config
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = prior_batch(tokenizer, reports)
    schedule = Schedule.from_config(cfg, steps_per_epoch=1)

    loss, logs = model(batch, schedule.at(schedule.max_steps - 1))   # the last stage (PRIOR: stage3)

    assert set(model.objectives.objectives) == set(cfg.objectives)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for k, v in logs.items() if k.startswith("loss/"))
