"""Experiment configuration: dataclass schemas and the YAML loader."""
from kgvlp.config.loader import ConfigError, LoadedExperiment, load_experiment, save_resolved
from kgvlp.config.schema import (DataConfig, EvalConfig, ExperimentConfig, ImageEncoderConfig,
                                 ModelConfig, StageConfig, TextEncoderConfig, TrainerConfig)

__all__ = ["ConfigError", "LoadedExperiment", "load_experiment", "save_resolved", "DataConfig", "EvalConfig",
           "ExperimentConfig", "ImageEncoderConfig", "ModelConfig", "StageConfig",
           "TextEncoderConfig", "TrainerConfig"]
