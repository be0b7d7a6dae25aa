"""``build_model(config)``: the one place a VLPModel is assembled from an experiment — for
training, resume, evaluation and its baselines, export and the benchmark alike."""
from __future__ import annotations

import dataclasses

from kgvlp.config.schema import ExperimentConfig, ModelConfig
from kgvlp.models.vlp import VLPModel
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.objective_set import enabled_objectives


def training_model_config(config: ExperimentConfig) -> ModelConfig:
    """``config.model`` with ``trainer.activation_checkpointing`` applied to both encoders
    (a copy: the loaded config is never changed)."""
    model, on = config.model, config.trainer.activation_checkpointing
    if not on:
        return model
    return dataclasses.replace(model, image=dataclasses.replace(model.image, gradient_checkpointing=True),
                               text=dataclasses.replace(model.text, gradient_checkpointing=True))


def build_model(config: ExperimentConfig, model_cfg: ModelConfig | None = None) -> VLPModel:
    """The experiment's model with the objectives enabled by the config or by any stage
    (weights not loaded). ``model_cfg`` replaces ``config.model`` (eval's baselines)."""
    enabled = enabled_objectives(config.objectives, [stage.weights for stage in config.trainer.stages])
    return assemble(model_cfg or training_model_config(config), config.objectives, enabled)


def rebuild(model: VLPModel, model_cfg: ModelConfig | None = None) -> VLPModel:
    """A fresh model with ``model``'s objectives, services and widths (eval's baselines when
    only the trained model is at hand); ``model_cfg`` replaces its encoders' config."""
    objectives = model.objectives
    return assemble(model_cfg or model.model_cfg, objectives.configs, list(objectives.objectives))


def assemble(model_cfg: ModelConfig, objective_configs: dict, enabled: list[str]) -> VLPModel:
    return VLPModel(model_cfg, objective_configs, REGISTRY, enabled)
