"""Tiny PRIOR models and hand-made features shared by the PRIOR tests."""
from __future__ import annotations

import torch

from kgvlp_tiny import make_batch
from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.models.vlp import VLPModel
from kgvlp.modules.registry import SERVICES
from kgvlp.modules.pooling import masked_mean
from kgvlp.modules.sentence_bank import SentenceBankView
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.base import ModelDims

WIDTH = 32
PRIOR_OBJECTIVES = ("prior_global", "prior_local", "sentence_prototypes", "masked_reconstruction",
                    "prototype_generation")


def prior_model_config(image: str = "resnet_test", width: int = WIDTH) -> ModelConfig:
    """ResNet-18 at 64 px (layer4 2×2 = 4 tokens, attention pool) or the 2-block ViT; MiniLM
    cut to 2 layers at 32 tokens; PRIOR's projections and sentence pooling at ``width``."""
    return ModelConfig(
        image=ImageEncoderConfig(name=image, image_size=64, resnet_local_layer="layer4",
                                 resnet_global_pool="attention", projection_dim=width),
        text=TextEncoderConfig(max_length=32, num_layers=2, dropout=0.0, projection_dim=width,
                               global_pool="sentence_attention"),
        services={"sentence_bank": SERVICES["sentence_bank"].Config(size=16)})


def prior_configs(mode: str = "feature_dropout", **overrides) -> dict:
    configs = {name: REGISTRY[name].Config() for name in PRIOR_OBJECTIVES}
    configs["masked_reconstruction"].mode = mode
    generation = configs["prototype_generation"]
    generation.num_layers, generation.num_heads, generation.num_queries, generation.dropout = 2, 4, 4, 0.0
    for name, fields in overrides.items():
        for key, value in fields.items():
            setattr(configs[name], key, value)
    return configs


def make_prior_model(image: str = "resnet_test", mode: str = "feature_dropout", seed: int = 0,
                     **overrides) -> VLPModel:
    torch.manual_seed(seed)
    return VLPModel(prior_model_config(image), prior_configs(mode, **overrides), REGISTRY)


def prior_batch(tokenizer, reports, size: int = 4, seed: int = 0):
    return make_batch(tokenizer, reports, size=size, max_length=32, seed=seed)


def dims(width: int = 4, tokens: int = 4, slots: int = 3) -> ModelDims:
    return ModelDims(image_width=width, image_token_width=width, text_width=width, num_image_tokens=tokens,
                     max_length=16, image_size=8, sentence_slots=slots)


def bank_view(sentences, mask, bank, prototypes=None, assignment=None) -> SentenceBankView:
    """A hand-made bank reading; ``mix`` is the deterministic softmax mixture (no noise)."""
    logits = sentences @ bank.t()
    assignment = logits.softmax(-1) if assignment is None else assignment
    prototypes = assignment @ bank if prototypes is None else prototypes
    return SentenceBankView(sentences=sentences, mask=mask, logits=logits, assignment=assignment,
                            prototypes=prototypes, bank=bank, usage=torch.zeros(bank.shape[0]),
                            idle_steps=torch.zeros(bank.shape[0], dtype=torch.long), dead_after=5,
                            mix=lambda x: (x @ bank.t()).softmax(-1) @ bank, pool=masked_mean)
