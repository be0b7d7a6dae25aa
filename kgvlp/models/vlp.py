"""VLPModel: encoders + shared services + the ObjectiveSet; the one module DeepSpeed wraps.

``forward(batch, ctx) -> (loss, logs)``: encodes only the features the enabled objectives
require (``encode``), then lets the ObjectiveSet weigh their terms.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kgvlp.config.schema import ModelConfig
from kgvlp.data.batch import Batch
from kgvlp.models.features import Features, Need
from kgvlp.models.image import add_projections, build_image_encoder
from kgvlp.models.text import TextEncoder, merge_words
from kgvlp.modules.heads import SharedProjections
from kgvlp.modules.registry import SERVICES, service_for
from kgvlp.objectives.base import ModelDims, StepContext
from kgvlp.objectives.objective_set import ObjectiveSet, enabled_objectives

# Needs that imply others (the projections read the backbone vectors, etc.).
IMPLIED = {
    Need.IMAGE_EMBED: {Need.IMAGE_GLOBAL},
    Need.TEXT_EMBED: {Need.TEXT_GLOBAL},
    Need.WORDS: {Need.TEXT_TOKENS},
}
IMAGE_NEEDS = {Need.IMAGE_GLOBAL, Need.IMAGE_TOKENS}
ENCODER_NEEDS = frozenset({Need.IMAGE_GLOBAL, Need.IMAGE_TOKENS, Need.TEXT_GLOBAL, Need.TEXT_TOKENS,
                           Need.WORDS, Need.IMAGE_EMBED, Need.TEXT_EMBED})
TEXT_NEEDS = {Need.TEXT_GLOBAL, Need.TEXT_TOKENS}
SECOND_VIEW_NEEDS = frozenset({Need.IMAGE_VIEW2, Need.DIVERGENCE})


def close_needs(needs: frozenset[Need]) -> frozenset[Need]:
    closed = set(needs)
    for need in needs:
        closed |= IMPLIED.get(need, set())
    return frozenset(closed)


def probe_dims(image_encoder: nn.Module, text_encoder: TextEncoder, image_size: int,
               in_chans: int, max_length: int) -> ModelDims:
    """Run a 1-image dummy through the image encoder to learn the token count."""
    was_training = image_encoder.training
    image_encoder.eval()
    with torch.no_grad():
        out = image_encoder(torch.zeros(1, in_chans, image_size, image_size))
    image_encoder.train(was_training)
    return ModelDims(image_width=out.global_vector.shape[-1], image_token_width=out.tokens.shape[-1],
                     text_width=text_encoder.width, num_image_tokens=out.tokens.shape[1],
                     max_length=max_length, image_size=image_size,
                     sentence_slots=text_encoder.sentence_slots)


class VLPModel(nn.Module):
    """Image/text encoders, shared services and objectives.

    Features beyond the encoders' own come from services (kgvlp/modules/registry.py): the
    model builds the service providing each needed ``Need`` once, under ``services.<name>``,
    configured by ``model.services.<name>`` (see docs/extending.md).
    """

    def __init__(self, model_cfg: ModelConfig, objective_configs: dict, registry: dict,
                 stages=None):
        super().__init__()
        self.model_cfg = model_cfg
        self.image_encoder = build_image_encoder(model_cfg.image)
        self.text_encoder = TextEncoder(model_cfg.text)
        self._share_width(objective_configs, registry, stages)
        self.dims = probe_dims(self.image_encoder, self.text_encoder, model_cfg.image.image_size,
                               model_cfg.image.in_chans, model_cfg.text.max_length)
        self.objectives = ObjectiveSet(objective_configs, registry, self.dims, stages)
        self.needs = close_needs(self.objectives.requires)
        self.services = nn.ModuleDict()
        pending = [n for n in self.needs if n not in ENCODER_NEEDS]
        while pending:  # services may require features of other services
            need = pending.pop()
            found = service_for(need)
            if found is None:
                raise ValueError(f"enabled objectives require feature {need.value!r}, which no "
                                 f"registered service provides; encoders provide "
                                 f"{sorted(n.value for n in ENCODER_NEEDS)}, services "
                                 f"{sorted(c.provides.value for c in SERVICES.values())}")
            name, cls = found
            if name in self.services:
                continue
            service_cfgs = getattr(model_cfg, "services", None) or {}
            self.services[name] = cls(service_cfgs.get(name) or cls.Config(), self)
            for extra in close_needs(cls.requires) - self.needs:
                self.needs = self.needs | {extra}
                if extra not in ENCODER_NEEDS:
                    pending.append(extra)
        self.needs = close_needs(self.needs)
        self._order_services()
        if Need.IMAGE_EMBED in self.needs or Need.TEXT_EMBED in self.needs:
            self.projections = SharedProjections(self.dims.image_width, self.dims.text_width,
                                                 out_dim=self.dims.embed_dim,
                                                 sync_bn=model_cfg.sync_batchnorm)

    def _share_width(self, objective_configs: dict, registry: dict, stages) -> None:
        """Objectives that compare image and text features directly (PRIOR's) need one width:
        without projections configured, the image side gets PRIOR's Linear projections to the
        text width (e.g. ViT-Tiny 192 → MiniLM 384)."""
        image, text = self.image_encoder, self.text_encoder
        if image.width == image.token_width == text.width:
            return
        needing = [n for n in enabled_objectives(objective_configs, stages) if registry[n].shared_width]
        if not needing:
            return
        configured = self.model_cfg.image.projection_dim, self.model_cfg.text.projection_dim
        if any(dim is not None for dim in configured):
            raise ValueError(f"objectives {needing} compare image and text features directly, but "
                             f"model.image.projection_dim={configured[0]} gives width {image.width} and "
                             f"model.text.projection_dim={configured[1]} gives width {text.width}: set "
                             "both to one value, or neither (the image side is then projected to the text width)")
        add_projections(image, text.width)

    def compile_for_training(self) -> None:
        """torch.compile the encoders in place (state_dict keys unchanged). Objectives stay
        eager: their step context carries Python floats that would force recompiles."""
        self.image_encoder.compile()
        self.text_encoder.bert.compile()

    @property
    def wants_second_view(self) -> bool:
        """Whether batches must carry ``images_view2`` (a second augmented view)."""
        return bool(self.needs & SECOND_VIEW_NEEDS)

    def _order_services(self) -> None:
        """Re-insert services so each comes after the services whose features it reads."""
        remaining, ordered, provided = dict(self.services.items()), {}, set(ENCODER_NEEDS)
        while remaining:
            ready = [n for n, s in remaining.items() if close_needs(s.requires) <= provided]
            if not ready:
                raise ValueError(f"services {sorted(remaining)} require each other's features")
            for name in ready:
                ordered[name] = remaining.pop(name)
                provided.add(ordered[name].provides)
        self.services = nn.ModuleDict(ordered)

    def encode(self, batch: Batch, needs: frozenset[Need] | None = None) -> Features:
        needs = close_needs(needs) if needs is not None else self.needs
        features = Features()
        if needs & IMAGE_NEEDS:
            image = self.image_encoder(batch.images)
            features.image_global = image.global_vector
            features.image_tokens = image.tokens
            features.patch_weights = image.patch_weights
        if needs & TEXT_NEEDS:
            text = self.text_encoder(batch.input_ids, batch.attention_mask, batch.sentence_index)
            features.text_global = text.global_vector
            features.text_tokens = text.tokens
            features.attention_mask = batch.attention_mask.bool()
            features.token_sentence_index = batch.sentence_index
            features.cls_attention = text.cls_attention
        if Need.WORDS in needs:
            slots = self.dims.word_slots
            features.word_tokens = merge_words(features.text_tokens, batch.word_index, slots)
            features.word_weights = merge_words(features.cls_attention, batch.word_index, slots)
            ones = (batch.word_index >= 0).to(features.text_tokens.dtype)
            features.word_mask = merge_words(ones, batch.word_index, slots) > 0
            sentence = merge_words((batch.sentence_index + 1) * (batch.word_index >= 0), batch.word_index, slots)
            pieces = merge_words((batch.word_index >= 0).long(), batch.word_index, slots).clamp(min=1)
            features.word_sentence_index = sentence // pieces - 1
        if Need.IMAGE_EMBED in needs:
            features.image_embed = self.projections.image(features.image_global)
        if Need.TEXT_EMBED in needs:
            features.text_embed = self.projections.text(features.text_global)
        for service in self.services.values():  # built in dependency order
            if service.provides in needs:
                features.extras[service.provides.value] = service.provide(self, batch, features)
        return features

    def forward(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.encode(batch)
        return self.objectives(features, batch, ctx)

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        """Once per optimizer step: services first (EMA, bank writes), then objectives."""
        for service in self.services.values():
            service.after_step(self, ctx)
        self.objectives.after_step(ctx)
