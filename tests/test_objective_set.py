"""The ObjectiveSet is the one place weights are applied: objectives return raw terms, the
step's weight comes from the engine's schedule (ctx.weights), per-term weights from the
objective's Config fields named in ``term_weights``; services are built in one order."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kgvlp.config.schema import ExperimentConfig, StageConfig, TrainerConfig
from kgvlp.engine.schedule import Schedule
from kgvlp.models.context import StepContext
from kgvlp.models.features import Features, ModelDims, Need
from kgvlp.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from kgvlp.objectives.objective_set import ObjectiveSet

DIMS = ModelDims(image_width=2, image_token_width=2, text_width=2, num_image_tokens=1, max_length=4)


@dataclass
class TwoTermsConfig(ObjectiveConfig):
    second_weight: float = 0.25


class TwoTerms(Objective):
    Config = TwoTermsConfig
    requires = frozenset({Need.IMAGE_GLOBAL})
    term_weights = {"second": "second_weight"}

    def forward(self, features, ctx):
        return ObjectiveOutput(terms={"first": features.image_global.sum(), "second": torch.tensor(8.0)})


def objective_set(**config) -> ObjectiveSet:
    return ObjectiveSet({"two": TwoTermsConfig(**config)}, {"two": TwoTerms}, DIMS)


def test_terms_are_logged_raw_and_weighted_once_with_the_steps_weight():
    features = Features(image_global=torch.ones(1, 2))

    loss, logs = objective_set(weight=1.0)(features, StepContext(weights={"two": 3.0}))

    assert logs["loss/two/first"].item() == 2.0 and logs["loss/two/second"].item() == 8.0
    assert loss.item() == pytest.approx(3.0 * (2.0 + 0.25 * 8.0))
    assert logs["weighted/two"].item() == pytest.approx(loss.item())


def test_without_a_schedule_the_configured_weight_applies():
    loss, _ = objective_set(weight=0.5)(Features(image_global=torch.ones(1, 2)), StepContext())

    assert loss.item() == pytest.approx(0.5 * (2.0 + 2.0))


def test_the_schedule_resolves_stage_weights_start_steps_and_warm_ups():
    stages = [StageConfig(name="a", steps=2, weights={"x": 1.0}),
              StageConfig(name="b", steps=4, weights={"x": 2.0, "y": 1.0})]
    config = ExperimentConfig(trainer=TrainerConfig(max_steps=None, stages=stages))
    config.objectives = {"x": ObjectiveConfig(weight=0.0),
                         "y": ObjectiveConfig(weight=0.0, start_step=3, warmup_steps=2)}
    schedule = Schedule.from_config(config, steps_per_epoch=1)

    weights = [schedule.at(step).weights for step in range(6)]

    assert [w["x"] for w in weights] == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert [w["y"] for w in weights] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert [schedule.at(step).stage for step in (0, 1, 2, 5)] == ["a", "a", "b", "b"] and schedule.max_steps == 6


SERVICE_ORDER = """
from kgvlp.config import load_experiment
from kgvlp.models.build import build_model
config = load_experiment("configs/experiments/prior_demo.yaml", ["model.image.name=vit_test",
                         "objectives.masked_reconstruction.mode=patch_mask"]).config
print(",".join(build_model(config).services))
"""


def test_services_are_built_in_the_registry_order_whatever_the_string_hashes():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    orders = {subprocess.run([sys.executable, "-c", SERVICE_ORDER], capture_output=True, text=True, check=True,
                             cwd=root, env={**env, "PYTHONHASHSEED": seed}).stdout.split()[-1]
              for seed in ("0", "1")}   # before: seed 1 built masked_view first, seed 0 sentence_bank

    assert orders == {"sentence_bank,masked_view"}
