"""The ceiling a stack is measured against: a plain symmetric-InfoNCE (CLIP) step on the
experiment's own encoders, batch and precision.

Nothing but what such a step must do: both encoders (built from the experiment's model
config, activation checkpointing included), one linear projection each, a learnable
temperature, the cross-entropy of the B×B similarity both ways, plain PyTorch AdamW (fused
on CUDA, foreach elsewhere) — no DeepSpeed engine, no heads, no services. What the
experiment's stack costs beyond this is what ``kgvlp bench compare`` reports.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.config.schema import ExperimentConfig
from kgvlp.data.batch import Batch
from kgvlp.models.build import training_model_config
from kgvlp.models.image import build_image_encoder
from kgvlp.models.text import TextEncoder

EMBED_DIM = 512                 # CLIP ViT-B's; the projections' width barely moves the cost
REFERENCE_PRECISIONS = ("fp32", "bf16", "bf16-weights")


class ContrastiveReference(nn.Module):
    """Image and text encoders + linear projections; ``forward`` returns the CLIP loss."""

    def __init__(self, config: ExperimentConfig):
        super().__init__()
        model_cfg = training_model_config(config)
        self.image_encoder = build_image_encoder(model_cfg.image)
        self.text_encoder = TextEncoder(model_cfg.text)
        self.image_projection = nn.Linear(self.image_encoder.width, EMBED_DIM, bias=False)
        self.text_projection = nn.Linear(self.text_encoder.width, EMBED_DIM, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, batch: Batch) -> Tensor:
        image = self.image_encoder(batch.images).global_vector
        text = self.text_encoder(batch.input_ids, batch.attention_mask, batch.sentence_index).global_vector
        image = F.normalize(self.image_projection(image), dim=-1)
        text = F.normalize(self.text_projection(text), dim=-1)
        logits = self.logit_scale.exp() * image @ text.t()
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class ReferenceStep:
    """One optimizer step of ``ContrastiveReference`` per ``step(batch)``, no host sync."""

    def __init__(self, config: ExperimentConfig, device: torch.device):
        trainer = config.trainer
        if trainer.precision not in REFERENCE_PRECISIONS:
            raise ValueError(f"trainer.precision={trainer.precision}: the reference step runs "
                             f"{', '.join(REFERENCE_PRECISIONS)} (fp16 would need loss scaling)")
        self.device = device
        self.model = ContrastiveReference(config).to(device)
        self.dtype = torch.bfloat16 if trainer.precision == "bf16-weights" else None
        if self.dtype is not None:
            self.model.to(self.dtype)
        self.autocast = trainer.precision == "bf16"
        params = [p for p in self.model.parameters() if p.requires_grad]
        fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.AdamW(params, lr=trainer.lr, betas=tuple(trainer.betas),
                                           weight_decay=trainer.weight_decay, **fast)

    def compile(self) -> None:
        """torch.compile what ``VLPModel.compile_for_training`` compiles: the encoders."""
        self.model.image_encoder.compile()
        self.model.text_encoder.bert.compile()

    def forward(self, batch: Batch) -> Tensor:
        batch = batch.to(self.device, self.dtype)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast
                    else contextlib.nullcontext())
        with autocast:
            return self.model(batch)

    def step(self, batch: Batch) -> Tensor:
        """Forward, backward and AdamW step; the loss, detached (not read here)."""
        with torch.profiler.record_function("kgvlp/forward"):
            loss = self.forward(batch)
        with torch.profiler.record_function("kgvlp/backward"):
            loss.backward()
        with torch.profiler.record_function("kgvlp/optimizer"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
