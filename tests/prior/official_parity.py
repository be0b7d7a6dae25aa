"""kgvlp's PRIOR under ``official_quirks``, set up as ``tools/parity_prior.py`` ran the official
code: the same token-level encoder outputs, the official parameters, the same Gumbel noise
and Dropout2d seed. Read by ``test_official_parity.py``."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

import kgvlp.models.vlp as vlp
from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.data.batch import Batch
from kgvlp.models.context import StepContext
from kgvlp.models.features import Need
from kgvlp.models.image import ImageOutput, _projected, add_projections
from kgvlp.models.text import TextEncoder
from kgvlp.modules.registry import SERVICES
from kgvlp.objectives import REGISTRY

DATA = Path(__file__).parent / "data"
# The tool's sizes (tools/parity_prior.py): embed 16, image/text widths 12/10, 8 prototypes,
# 4 queries, 8-layer decoder of 4 heads and 32 FFN units, 6 sentences at most, 7×7 tokens.
EMBED, BANK, QUERIES, SLOTS, DROPOUT_SEED = 16, 8, 4, 8, 1234
STAGE_WEIGHTS = {   # configs/experiments/prior_resnet50.yaml's stages
    "stage1": {"prior_global": 1.0, "prior_local": 1.0},
    "stage2": {"prior_global": 1.0, "prior_local": 1.0, "sentence_prototypes": 10.0},
    "stage3": {"prior_global": 10.0, "prior_local": 1.0, "sentence_prototypes": 10.0,
               "masked_reconstruction": 1.0, "prototype_generation": 10.0},
}
OBJECTIVES = tuple(STAGE_WEIGHTS["stage3"])


def load_fixture(stage: str, batch: int) -> dict[str, torch.Tensor]:
    tensors = load_file(str(DATA / f"official_{stage}_b{batch}.safetensors"))
    tensors.update(load_file(str(DATA / "official_params.safetensors")))
    return tensors


class FixedImageEncoder(nn.Module):
    """An image encoder whose backbone output is the fixture's (layer4 tokens, attention-
    pooled vector); kgvlp's PRIOR projections follow (``add_projections``, ``_projected``)."""
    family = "cnn"      # a ResNet's layer4: uniform patch weights

    def __init__(self, tokens: torch.Tensor, global_vector: torch.Tensor):
        super().__init__()
        self.tokens, self.global_vector = tokens, global_vector
        self.width = self.token_width = tokens.shape[-1]

    def forward(self, images):
        weights = torch.full(self.tokens.shape[:2], 1.0 / self.tokens.shape[1], dtype=self.tokens.dtype)
        return _projected(self, ImageOutput(global_vector=self.global_vector, tokens=self.tokens,
                                            patch_weights=weights))


class FixedTextEncoder(TextEncoder):
    """A text encoder whose BERT states are the fixture's; kgvlp's projection, sentence means
    and sentence attention pool follow (``TextEncoder.from_states``)."""

    def __init__(self, cfg: TextEncoderConfig, states: torch.Tensor):
        nn.Module.__init__(self)
        self.states, self.width, self.num_heads = states, states.shape[-1], 1
        self._build_heads(cfg)

    def forward(self, input_ids, attention_mask, sentence_index=None):
        uniform = attention_mask / attention_mask.sum(1, keepdim=True)
        return self.from_states(self.states, uniform, attention_mask, sentence_index)


def model_config(quirks: bool = True) -> ModelConfig:
    bank = SERVICES["sentence_bank"].Config(size=BANK, temperature=0.9, official_quirks=quirks, cut_to=QUERIES)
    return ModelConfig(
        image=ImageEncoderConfig(name="resnet_test", image_size=224, resnet_local_layer="layer4",
                                 resnet_global_pool="attention", projection_dim=EMBED),
        text=TextEncoderConfig(max_length=24, projection_dim=EMBED, global_pool="sentence_attention",
                               sentence_slots=SLOTS),
        services={"sentence_bank": bank})


def objective_configs(quirks: bool = True) -> dict:
    configs = {name: REGISTRY[name].Config() for name in OBJECTIVES}
    for name in ("prior_global", "prior_local"):
        configs[name].prototype_stages = ["stage2", "stage3"]
    generation = configs["prototype_generation"]
    generation.num_queries, generation.num_layers, generation.num_heads = QUERIES, 8, 4
    generation.ffn_ratio, generation.dropout = 2.0, 0.0
    for config in configs.values():
        if hasattr(config, "official_quirks"):
            config.official_quirks = quirks
    return configs


def official_name(name: str) -> str | None:
    """The official parameter that a kgvlp parameter holds (None: no counterpart)."""
    fixed = {
        "image_encoder.global_projection": "global_image_projection",
        "image_encoder.token_projection": "local_image_projection",
        "text_encoder.token_projection": "local_text_projection",
        "objectives.objectives.prior_global.logit_scale.log_scale": "logit_scale",
        "objectives.objectives.prior_local.logit_scale.log_scale": "local_logit_scale",
        "objectives.objectives.prior_local.predictor": "predictor",
        "services.sentence_bank.prototypes": "sentence_bank.embed",
        "objectives.objectives.prototype_generation.queries": "prototype_queries",
        "objectives.objectives.prototype_generation.embeddings.position": "sentence_decoder.embeddings.position_embeddings.weight",
        "objectives.objectives.prototype_generation.embeddings.token_type": "sentence_decoder.embeddings.token_type_embeddings.weight",
        "objectives.objectives.prototype_generation.embeddings.norm": "sentence_decoder.embeddings.LayerNorm",
        "objectives.objectives.masked_reconstruction.head": "image_decoder.output_head.0",
    }
    for prefix, target in fixed.items():
        if name == prefix or name.startswith(prefix + "."):
            return target + name[len(prefix):]
    qkv = re.fullmatch(r"objectives\.objectives\.prior_local\.cross_attention\.(image|text)_qkv\.(\d)\.(\w+)", name)
    if qkv:
        side, index, kind = qkv.groups()
        return f"local_cross_attention.{'qkv'[int(index)].replace('q', 'query').replace('k', 'key').replace('v', 'value')}" \
               f"{1 if side == 'image' else 2}.{kind}"
    pool = re.fullmatch(r"text_encoder\.sentence_pool\.attention\.(in_proj_weight|in_proj_bias|out_proj\.(\w+))", name)
    if pool:
        return "global_text_attention." + ("c_proj." + pool.group(2) if pool.group(2) else
                                           "{q,k,v}_proj." + ("weight" if "weight" in pool.group(1) else "bias"))
    block = re.fullmatch(r"objectives\.objectives\.masked_reconstruction\.blocks\.(\d)\.(\d)\.(\w+)", name)
    if block:
        index, layer, kind = block.groups()
        conv, part = {"1": ("conv1", 0), "2": ("conv1", 1), "4": ("conv2", 0), "5": ("conv2", 1)}[layer]
        return f"image_decoder.blocks.{index}.{conv}.{part}.{kind}"
    layer = re.fullmatch(r"objectives\.objectives\.prototype_generation\.decoder\.layers\.(\d)\.(.+)", name)
    if layer:
        index, rest = layer.groups()
        bert = f"sentence_decoder.encoder.layer.{index}."
        parts = {"self_attn": "attention.", "multihead_attn": "crossattention."}
        for ours, theirs in parts.items():
            if rest.startswith(ours + ".in_proj_"):
                return bert + theirs + "self.{query,key,value}." + rest.rsplit("_", 1)[1]
            if rest.startswith(ours + ".out_proj."):
                return bert + theirs + "output.dense." + rest.rsplit(".", 1)[1]
        norms = {"norm1": "attention.output.LayerNorm.", "norm2": "crossattention.output.LayerNorm.",
                 "norm3": "output.LayerNorm.", "linear1": "intermediate.dense.", "linear2": "output.dense."}
        module, kind = rest.split(".")
        return bert + norms[module] + kind
    return None


def official_value(fixture: dict, name: str) -> torch.Tensor:
    """The official tensor for ``official_name``'s answer, q/k/v stacked where kgvlp packs them."""
    if "{" in name:
        head, tail = name.split("{")
        parts, rest = tail.split("}")
        return torch.cat([fixture[f"param/{head}{part}{rest}"] for part in parts.split(",")])
    return fixture[f"param/{name}"]


@dataclass
class Run:
    """kgvlp's numbers for one fixture: logs, features and what the hooks recorded."""
    loss: torch.Tensor
    logs: dict
    features: object
    model: nn.Module
    leaves: dict
    recorded: dict = field(default_factory=dict)


class FixtureGumbel:
    """``F.gumbel_softmax`` with the fixture's noise: the bank's draw over the sentence slots,
    then the generation's over its Q slots (kgvlp draws every slot, padded ones included; the
    official code draws the real rows only, which get the same noise)."""

    def __init__(self, fixture: dict):
        sentences = fixture["input/noise_sentences"].double()
        pad = SLOTS - sentences.shape[1]
        self.draws = [torch.nn.functional.pad(sentences, (0, 0, 0, pad)), fixture["input/noise_generated"].double()]
        self.outputs: list[torch.Tensor] = []

    def __call__(self, logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        noise = self.draws.pop(0)
        assert noise.shape == logits.shape, (noise.shape, logits.shape)
        self.outputs.append(((logits + noise) / tau).softmax(dim))
        return self.outputs[-1]


def images(pixels_u8: torch.Tensor) -> torch.Tensor:
    return (pixels_u8.double() / 255.0).repeat_interleave(8, -2).repeat_interleave(8, -1)


def run_kgvlp(fixture: dict, stage: str, monkeypatch, quirks: bool = True) -> Run:
    leaves = {key: fixture[f"input/{key}"].double().requires_grad_(True)
              for key in ("image_tokens", "image_global", "text_states")}

    def image_encoder(cfg):
        encoder = FixedImageEncoder(leaves["image_tokens"], leaves["image_global"])
        add_projections(encoder, cfg.projection_dim)
        return encoder

    monkeypatch.setattr(vlp, "build_image_encoder", image_encoder)
    monkeypatch.setattr(vlp, "TextEncoder", lambda cfg: FixedTextEncoder(cfg, leaves["text_states"]))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)      # the float64 inputs pass the probe at build time
    try:
        model = vlp.VLPModel(model_config(quirks), objective_configs(quirks), REGISTRY).train()
    finally:
        torch.set_default_dtype(default)
    load_official(model, fixture)

    official_index = fixture["input/sentence_index"]
    batch_size = official_index.shape[0]
    batch = Batch(images=images(fixture["input/images_u8"]), input_ids=torch.zeros_like(official_index),
                  attention_mask=fixture["input/attention_mask"], word_index=torch.full_like(official_index, -1),
                  sentence_index=official_index - 1, sample_index=torch.arange(batch_size))
    run = Run(loss=None, logs=None, features=None, model=model, leaves=leaves)
    gumbel = FixtureGumbel(fixture)
    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", gumbel)
    objectives = model.objectives.objectives
    objectives["masked_reconstruction"].feature_dropout.register_forward_pre_hook(lambda *_: seed_dropout())
    hooks = {"generated": objectives["prototype_generation"].decoder,
             "reconstruction": objectives["masked_reconstruction"].head}
    for key, module in hooks.items():
        module.register_forward_hook(lambda m, a, out, key=key: run.recorded.setdefault(key, out))
    match = objectives["prototype_generation"].match
    monkeypatch.setattr(objectives["prototype_generation"], "match",
                        lambda *a: run.recorded.setdefault("assignment", match(*a)))
    complete = model.complete   # the step's features (forward calls encode_samples, then complete)

    def recorded_encode(*args, **kwargs):
        run.features = complete(*args, **kwargs)
        view = run.features.extras.get(Need.PROTOTYPE_BANK.value)
        if view is not None:   # record the report poolings (alignment's, then generation's)
            pool = view.pool
            view.pool = lambda *a: run.recorded.setdefault("pools", []).append(pool(*a)) or run.recorded["pools"][-1]
        return run.features

    monkeypatch.setattr(model, "complete", recorded_encode)
    run.loss, run.logs = model(batch, StepContext(stage=stage, weights=dict.fromkeys(OBJECTIVES, 0.0)
                                                  | STAGE_WEIGHTS[stage]))
    run.loss.backward()
    run.recorded["gumbel"] = gumbel.outputs
    return run


def seed_dropout() -> None:
    torch.manual_seed(DROPOUT_SEED)


@torch.no_grad()
def load_official(model: nn.Module, fixture: dict) -> None:
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        theirs = official_name(name)
        if theirs is None:
            continue
        value = official_value(fixture, theirs)
        if name.endswith("embeddings.position"):
            value = value[:tensor.shape[0]]
        elif name.endswith("embeddings.token_type"):
            value = value[0]
        tensor.copy_(value.reshape(tensor.shape).to(tensor.dtype))
