"""MLIP's divergence encoders: momentum copies of the online image/text encoders and the
shared projections (provides ``Need.DIVERGENCE``).

MLIP (Li et al., CVPR 2024) adds "two dynamically updated divergence encoders" that give a
view per sample; the update rule is not public. kgvlp reads them as MoCo/ALBEF momentum
encoders: θ′ ← m θ′ + (1 − m) θ once per optimizer step (``after_step``), m following a
cosine schedule from ``momentum`` to ``momentum_end`` (BYOL), or a plain re-copy every
``copy_every`` steps (``update: copy``). They encode the second augmented view of each
image (``Batch.images_view2``) and the report (with the copy's own dropout). An optional
MoCo queue of their embeddings, written from all ranks, adds negatives.

Memory: weights are buffers (``EMAModule``): no gradients, no optimizer state; DeepSpeed
ZeRO partitions only parameters, so under ZeRO-3 the online encoders are partitioned once
and each rank holds one full copy of the divergence encoders (gathering the online
partitions for the update through ``modifiable``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from kgvlp.models.features import Features, Need
from kgvlp.modules.ema import EMAModule, momentum_at
from kgvlp.modules.heads import SharedProjections
from kgvlp.modules.queue import FeatureQueue
from kgvlp.modules.service import Service, ServiceConfig


@dataclass
class DivergenceConfig(ServiceConfig):
    update: Literal["ema", "copy"] = "ema"  # ours: ema (MoCo/ALBEF) | copy (re-copy every copy_every steps)
    momentum: float = 0.995        # ours (ALBEF 0.995): start of the cosine schedule
    momentum_end: float = 1.0      # ours (BYOL): momentum reaches this at the last step
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine | constant (momentum throughout)
    copy_every: int = 1000         # update: copy
    queue_size: int = 0            # ours: 0 = no queue; MoCo/ALBEF use 65536 / 57600
    channels_last: bool = True     # CNN copy in NHWC layout: same math, faster convs (no effect on ViTs)


@dataclass
class DivergenceFeatures:
    """image_embed/text_embed: (B, 128) L2-normalised divergence embeddings (no gradient) of
    view 2 and of the report. queue_image/queue_text: (Q, 128) earlier global batches (zeros
    where not yet filled) and queue_valid (Q,) bool, or None without a queue.
    image_vector/text_vector: (B, Di)/(B, Dt) the copies' backbone vectors, from which the
    copied heads (BatchNorm over the whole batch) make the embeddings in ``complete``."""
    batch_independent: ClassVar[frozenset[str]] = frozenset({"queue_image", "queue_text", "queue_valid"})
    image_embed: Tensor | None = None
    text_embed: Tensor | None = None
    queue_image: Tensor | None = None
    queue_text: Tensor | None = None
    queue_valid: Tensor | None = None
    image_vector: Tensor | None = None
    text_vector: Tensor | None = None


class DivergenceQueues(nn.Module):
    """Image and text queues of divergence embeddings. ``stage`` may be called several times
    per optimizer step (gradient accumulation); ``commit`` writes them all, from every rank."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.image = FeatureQueue(size, dim)
        self.text = FeatureQueue(size, dim)
        self._pending: list[tuple[Tensor, Tensor]] = []

    def stage(self, image_embed: Tensor, text_embed: Tensor) -> None:
        self._pending.append((image_embed.detach(), text_embed.detach()))

    @torch.no_grad()
    def commit(self) -> None:
        if not self._pending:
            return
        self.image.stage(torch.cat([p[0] for p in self._pending]))
        self.text.stage(torch.cat([p[1] for p in self._pending]))
        self.image.commit()
        self.text.commit()
        self._pending = []

    def view(self) -> tuple[Tensor, Tensor, Tensor]:
        """(queue_image, queue_text, valid) without a host sync (no ``int(filled)``)."""
        size = self.image.features.shape[0]
        valid = torch.arange(size, device=self.image.features.device) < self.image.filled
        return self.image.features, self.text.features, valid


class DivergenceEncoders(Service):
    Config = DivergenceConfig
    provides = Need.DIVERGENCE
    requires = frozenset({Need.IMAGE_EMBED, Need.TEXT_EMBED})   # the online projections exist

    def __init__(self, cfg: DivergenceConfig, model: nn.Module):
        super().__init__(cfg, model)
        if cfg.update not in ("ema", "copy") or cfg.schedule not in ("cosine", "constant"):
            raise ValueError(f"model.services.divergence: update {cfg.update!r} (ema | copy), "
                             f"schedule {cfg.schedule!r} (cosine | constant)")
        dims = model.dims
        self.image_encoder = EMAModule(model.image_encoder)
        if cfg.channels_last and hasattr(self.image_encoder.shadow, "use_channels_last"):   # CNNs only
            self.image_encoder.shadow.use_channels_last()
        # A locked text tower (model.text.frozen_layers: -1) never changes, so its momentum
        # copy would equal it and read the same report: the online [CLS] state is reused
        # (detached) instead of a second text forward and a copy in memory.
        locked = not any(p.requires_grad for p in model.text_encoder.parameters())
        self.text_encoder = None if locked else EMAModule(model.text_encoder)
        # The model builds its projections after its services, so this copy starts from a
        # fresh head and is made equal to the online one on first use (``_sync``).
        self.projections = EMAModule(SharedProjections(dims.image_width, dims.text_width, out_dim=dims.embed_dim,
                                                       sync_bn=dims.sync_batchnorm, text_head=dims.text_head))
        self.register_buffer("synced", torch.zeros((), dtype=torch.bool))
        self.queues = DivergenceQueues(cfg.queue_size, dims.embed_dim) if cfg.queue_size > 0 else None
        self._checked = False

    def _pairs(self, model) -> list[tuple[EMAModule, nn.Module]]:
        pairs = [(self.image_encoder, model.image_encoder), (self.projections, model.projections)]
        if self.text_encoder is not None:
            pairs.append((self.text_encoder, model.text_encoder))
        return pairs

    @torch.no_grad()
    def _sync(self, model) -> None:
        """Copy the online weights once per run (also after ``model.init_from`` loaded them);
        a restored checkpoint says it is already synced. One host read per (re)load."""
        if self._checked:
            return
        if not bool(self.synced):
            for shadow, online in self._pairs(model):
                shadow.update(online, momentum=0.0)
            self.synced.fill_(True)
        self._checked = True

    def _load_from_state_dict(self, *args, **kwargs):
        self._checked = False
        super()._load_from_state_dict(*args, **kwargs)

    def provide(self, model, batch, features: Features) -> DivergenceFeatures:
        """The copies' backbone vectors of view 2 and of the report (sample by sample)."""
        if batch.images_view2 is None:
            raise ValueError("the divergence encoders need a second augmented view: set data.second_view: "
                             "true (the Trainer does this when model.wants_second_view)")
        self._sync(model)
        online_dtype = features.image_global.dtype
        with torch.no_grad(), EMAModule.compute_like(online_dtype, batch.images_view2.device):
            image = self.image_encoder(batch.images_view2).global_vector
            if self.text_encoder is None:
                text = features.text_global.detach()
            else:
                text = self.text_encoder(batch.input_ids, batch.attention_mask).global_vector
        return DivergenceFeatures(image_vector=image, text_vector=text)

    def complete(self, model, features: Features, value: DivergenceFeatures) -> DivergenceFeatures:
        """The copied heads on the whole batch (their BatchNorm normalises over it, as the
        online heads' do), the queue as it stands, and this batch staged for the queue."""
        online_dtype = features.image_embed.dtype
        with torch.no_grad(), EMAModule.compute_like(online_dtype, value.image_vector.device):
            heads = self.projections.shadow
            out = DivergenceFeatures(image_embed=heads.image(value.image_vector).to(online_dtype),
                                     text_embed=heads.text(value.text_vector).to(online_dtype),
                                     image_vector=value.image_vector, text_vector=value.text_vector)
        if self.queues is not None:
            out.queue_image, out.queue_text, out.queue_valid = self.queues.view()
            if self.training:
                self.queues.stage(out.image_embed, out.text_embed)
        return out

    def momentum(self, ctx) -> float:
        """Momentum of the update after optimizer step ``ctx.step`` (1.0 = no change)."""
        if self.cfg.update == "copy":
            return 0.0 if (ctx.step + 1) % self.cfg.copy_every == 0 else 1.0
        if self.cfg.schedule == "constant":
            return self.cfg.momentum
        return momentum_at(ctx.step, ctx.max_steps, self.cfg.momentum, self.cfg.momentum_end)

    @torch.no_grad()
    def after_step(self, model, ctx) -> None:
        self._sync(model)
        momentum = self.momentum(ctx)
        if momentum < 1.0:
            for shadow, online in self._pairs(model):
                shadow.update(online, momentum)
        if self.queues is not None:
            self.queues.commit()
