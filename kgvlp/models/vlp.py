"""VLPModel: encoders + shared services + the ObjectiveSet; the one module DeepSpeed wraps.

``forward(batch, ctx) -> (loss, logs)``: encodes only the features the enabled objectives
require (``encode``), then lets the ObjectiveSet weigh their terms with the step's weights
(``ctx.weights``, from the engine's schedule). Build one with ``kgvlp.models.build_model``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kgvlp.config.schema import ModelConfig
from kgvlp.data.batch import Batch
from kgvlp.models.context import StepContext
from kgvlp.models.features import Features, ModelDims, Need
from kgvlp.models.image import add_projections, build_image_encoder
from kgvlp.models.text import TextEncoder, merge_words
from kgvlp.modules.heads import SharedProjections
from kgvlp.modules.pooling import sentence_means
from kgvlp.modules.registry import SERVICES, service_for
from kgvlp.objectives.objective_set import ObjectiveSet, enabled_objectives, zero_gradient

# Needs that imply others (the projections read the backbone vectors, etc.).
IMPLIED = {
    Need.IMAGE_EMBED: {Need.IMAGE_GLOBAL},
    Need.TEXT_EMBED: {Need.TEXT_GLOBAL},
    Need.WORDS: {Need.TEXT_TOKENS},
    Need.SENTENCES: {Need.TEXT_TOKENS},
}
IMAGE_NEEDS = {Need.IMAGE_GLOBAL, Need.IMAGE_TOKENS}
# Features the model computes itself (encoders, projections, batch fields); services the rest.
ENCODER_NEEDS = frozenset({Need.IMAGE_GLOBAL, Need.IMAGE_TOKENS, Need.TEXT_GLOBAL, Need.TEXT_TOKENS,
                           Need.WORDS, Need.IMAGE_EMBED, Need.TEXT_EMBED, Need.SENTENCES, Need.PIXELS,
                           Need.LABELS})
TEXT_NEEDS = {Need.TEXT_GLOBAL, Need.TEXT_TOKENS}
SECOND_VIEW_NEEDS = frozenset({Need.IMAGE_VIEW2, Need.DIVERGENCE})


def close_needs(needs: frozenset[Need]) -> frozenset[Need]:
    closed = set(needs)
    for need in needs:
        closed |= IMPLIED.get(need, set())
    return frozenset(closed)


def probe_dims(image_encoder: nn.Module, text_encoder: TextEncoder, model_cfg: ModelConfig) -> ModelDims:
    """Run a 1-image dummy through the image encoder to learn the token count."""
    image_size, in_chans = model_cfg.image.image_size, model_cfg.image.in_chans
    was_training = image_encoder.training
    image_encoder.eval()
    with torch.no_grad():
        out = image_encoder(torch.zeros(1, in_chans, image_size, image_size))
    image_encoder.train(was_training)
    return ModelDims(image_width=out.global_vector.shape[-1], image_token_width=out.tokens.shape[-1],
                     text_width=text_encoder.width, num_image_tokens=out.tokens.shape[1],
                     max_length=model_cfg.text.max_length, image_size=image_size,
                     sentence_slots=text_encoder.sentence_slots, sync_batchnorm=model_cfg.sync_batchnorm,
                     text_head=model_cfg.text.head,
                     image_family=image_encoder.family)


class VLPModel(nn.Module):
    """Image/text encoders, shared services and objectives.

    Features beyond the encoders' own come from services (kgvlp/modules/registry.py): the
    model builds the service providing each needed ``Need`` once, under ``services.<name>``,
    configured by ``model.services.<name>`` (see docs/extending.md). ``enabled``: the
    objectives to build (default: weight > 0 in ``objective_configs``; ``build_model`` adds
    those a stage enables).
    """

    def __init__(self, model_cfg: ModelConfig, objective_configs: dict, registry: dict,
                 enabled: list[str] | None = None):
        super().__init__()
        self.model_cfg = model_cfg
        enabled = enabled_objectives(objective_configs) if enabled is None else list(enabled)
        self.image_encoder = build_image_encoder(model_cfg.image)
        self.text_encoder = TextEncoder(model_cfg.text)
        self._share_width(enabled, registry)
        self.dims = probe_dims(self.image_encoder, self.text_encoder, model_cfg)
        self.objectives = ObjectiveSet(objective_configs, registry, self.dims, enabled)
        self.needs = close_needs(self.objectives.requires)
        self.services = nn.ModuleDict()
        self._build_services(model_cfg)
        self._order_services()
        if Need.IMAGE_EMBED in self.needs or Need.TEXT_EMBED in self.needs:
            self.projections = SharedProjections(self.dims.image_width, self.dims.text_width,
                                                 out_dim=self.dims.embed_dim,
                                                 sync_bn=model_cfg.sync_batchnorm,
                                                 text_head=model_cfg.text.head)

    def _build_services(self, model_cfg: ModelConfig) -> None:
        """The service providing each needed feature, built once, in the registry's order (not
        a set's, whose order follows per-process string hashes): their parameters are then
        initialised in the same order in every process. Services may need other services."""
        service_cfgs = getattr(model_cfg, "services", None) or {}
        missing = [n for n in Need if n in self.needs - ENCODER_NEEDS and service_for(n) is None]
        if missing:
            raise ValueError(f"enabled objectives require feature {missing[0].value!r}, which no "
                             f"registered service provides; encoders provide "
                             f"{sorted(n.value for n in ENCODER_NEEDS)}, services "
                             f"{sorted(c.provides.value for c in SERVICES.values())}")
        pending = [(name, cls) for name, cls in SERVICES.items()
                   if cls.provides in self.needs and name not in self.services]
        if pending:
            name, cls = pending[0]
            self.services[name] = cls(service_cfgs.get(name) or cls.Config(), self)
            self.needs = close_needs(self.needs | cls.requires)
            self._build_services(model_cfg)   # the next one, with what this one requires

    def _share_width(self, enabled: list[str], registry: dict) -> None:
        """Objectives that compare image and text features directly (PRIOR's) need one width:
        without projections configured, the image side gets PRIOR's Linear projections to the
        text width (e.g. ViT-Tiny 192 → MiniLM 384)."""
        image, text = self.image_encoder, self.text_encoder
        if image.width == image.token_width == text.width:
            return
        needing = [n for n in enabled if registry[n].shared_width]
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
        return self.complete(self.encode_samples(batch, needs), needs)

    def encode_samples(self, batch: Batch, needs: frozenset[Need]) -> Features:
        """The features each sample has on its own (encoders, words, sentences, the services'
        ``provide``): what gradient accumulation caches per micro-batch and concatenates."""
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
            features.sentences, features.sentence_mask = text.sentences, text.sentence_mask
        if Need.SENTENCES in needs and features.sentences is None:
            features.sentences, features.sentence_mask = sentence_means(
                features.text_tokens, batch.sentence_index, self.dims.sentence_slots)
        if Need.PIXELS in needs:
            features.images = batch.images
        if Need.LABELS in needs:
            if batch.labels is None:
                raise ValueError("an objective reads finding labels (findings_from: labels), but the "
                                 "batch carries none: use a dataset with labels, or findings_from: entities")
            features.labels = batch.labels
        if Need.WORDS in needs:
            slots = self.dims.word_slots
            features.word_tokens = merge_words(features.text_tokens, batch.word_index, slots)
            features.word_weights = merge_words(features.cls_attention, batch.word_index, slots)
            ones = (batch.word_index >= 0).to(features.text_tokens.dtype)
            features.word_mask = merge_words(ones, batch.word_index, slots) > 0
            sentence = merge_words((batch.sentence_index + 1) * (batch.word_index >= 0), batch.word_index, slots)
            pieces = merge_words((batch.word_index >= 0).long(), batch.word_index, slots).clamp(min=1)
            features.word_sentence_index = sentence // pieces - 1
        for service in self.services.values():  # built in dependency order
            if service.provides in needs:
                features.extras[service.provides.value] = service.provide(self, batch, features)
        return features

    def complete(self, features: Features, needs: frozenset[Need]) -> Features:
        """What couples the samples of the whole batch, computed once per optimizer step: the
        shared projections (their BatchNorm normalises over the batch) and the services'
        ``complete`` (heads with BatchNorm, state staged for ``after_step``)."""
        if Need.IMAGE_EMBED in needs:
            features.image_embed = self.projections.image(features.image_global)
        if Need.TEXT_EMBED in needs:
            features.text_embed = self.projections.text(features.text_global)
        for service in self.services.values():
            if service.provides in needs:
                key = service.provides.value
                features.extras[key] = service.complete(self, features, features.extras[key])
        return features

    def forward(self, batch: Batch | Features, ctx: StepContext,
                part: str = "step") -> tuple[Tensor, dict[str, Tensor]] | Features:
        """``part`` "step": loss and logs of ``batch``. Gradient accumulation
        (kgvlp/engine/accumulation.py) splits it in two, each through the engine's forward:
        "samples" gives ``encode_samples`` of a micro-batch; "loss" takes the concatenated
        ``Features`` of all micro-batches and returns the loss and logs of the whole batch.

        Only the objectives active at this step run, on only the features they read: a
        service no active objective needs is skipped too (its parameters get zero gradients,
        as the objectives' do)."""
        active, needs = self._step_plan(ctx)
        if part == "samples":
            return self.encode_samples(batch, needs)
        if part == "loss":
            return self._loss(batch, ctx, active, needs)
        if part != "step":
            raise ValueError(f"VLPModel.forward: part {part!r} (step | samples | loss)")
        return self._loss(self.encode_samples(batch, needs), ctx, active, needs)

    def _step_plan(self, ctx: StepContext) -> tuple[list[str], frozenset[Need]]:
        """The objectives active at this step and the features they need."""
        active = self.objectives.active(ctx)
        if len(active) == len(self.objectives.objectives):
            return active, self.needs
        return active, self.needs_of(self.objectives.requires_of(active))

    def _loss(self, features: Features, ctx: StepContext, active: list[str],
              needs: frozenset[Need]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, logs = self.objectives(self.complete(features, needs), ctx, active)
        if len(active) == len(self.objectives.objectives):
            return loss, logs
        idle = [service for service in self.services.values() if service.provides not in needs]
        return loss + zero_gradient(*idle, device=loss.device), logs

    def needs_of(self, objective_needs: frozenset[Need]) -> frozenset[Need]:
        """``objective_needs`` with what the services providing them read in turn."""
        needs = close_needs(objective_needs)
        for service in reversed(list(self.services.values())):   # each after its sources
            if service.provides in needs:
                needs = close_needs(needs | service.requires)
        return needs

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        """Once per optimizer step: services first (EMA, bank writes), then objectives."""
        for service in self.services.values():
            service.after_step(self, ctx)
        self.objectives.after_step(ctx)
