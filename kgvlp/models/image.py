"""Image encoders: timm ViTs and ResNet-50 returning global vector, tokens and patch weights."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import timm
import torch
from torch import Tensor, nn
from timm.layers import AttentionPool2d

from kgvlp.config.schema import ImageEncoderConfig
from kgvlp.models.weights import load_backbone_weights

# Our names → timm architectures. "vit_test" is a 2-block ViT for fast tests; "vit_science_patch8"
# is the science preset's ViT (configs/experiments/science_base.yaml): 8-px patches so an
# 80-px image has 10×10 = 100 patches for CTA, 4 blocks of width 192 (ViT-Tiny's width and
# heads at a third of its depth), built from timm's VisionTransformer class, nothing downloaded.
VIT_ARCHS = {
    "vit_test": dict(patch_size=16, embed_dim=64, depth=2, num_heads=2),
    "vit_science_patch8": dict(patch_size=8, embed_dim=192, depth=4, num_heads=3),
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_large_patch14": "vit_large_patch14_224",
}
CNN_ARCHS = {"resnet50": "resnet50", "resnet_test": "resnet18"}
IMAGE_ENCODERS = sorted([*VIT_ARCHS, *CNN_ARCHS])


@dataclass
class ImageOutput:
    """global_vector (B, D); tokens (B, P, Dt); patch_weights (B, P)."""
    global_vector: Tensor
    tokens: Tensor
    patch_weights: Tensor


def add_projections(encoder: nn.Module, dim: int) -> None:
    """PRIOR's global and local image projections (Linear → ``dim``), applied by the
    encoder's forward after the backbone (``image_encoder.{global,token}_projection``)."""
    encoder.global_projection = nn.Linear(encoder.width, dim)
    encoder.token_projection = nn.Linear(encoder.token_width, dim)
    nn.init.normal_(encoder.global_projection.weight, std=encoder.width ** -0.5)     # PRIOR's init
    nn.init.normal_(encoder.token_projection.weight, std=encoder.token_width ** -0.5)
    encoder.width = encoder.token_width = dim


def _projected(encoder: nn.Module, out: "ImageOutput") -> "ImageOutput":
    if getattr(encoder, "global_projection", None) is None:
        return out
    return ImageOutput(global_vector=encoder.global_projection(out.global_vector),
                       tokens=encoder.token_projection(out.tokens), patch_weights=out.patch_weights)


class VisiblePatches(nn.Module):
    """Sits in timm's ``patch_drop`` slot (after the position embedding, before the blocks):
    passes every token through, or — inside ``ViTEncoder.visible_only`` — only the prefix
    tokens and the patches at ``keep_index`` (MAE's masked encoder), through timm's public
    ``forward_features``. No parameters: the state dict is unchanged."""

    def __init__(self, num_prefix_tokens: int):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.keep_index: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.keep_index is None:
            return x
        prefix = self.num_prefix_tokens
        index = self.keep_index[..., None].expand(-1, -1, x.shape[-1])
        return torch.cat([x[:, :prefix], torch.gather(x[:, prefix:], 1, index)], dim=1)


class _BackboneIntermediates(nn.Module):
    """``backbone.forward_intermediates`` as a module call returning tensors, so that ZeRO-3
    gathers the backbone's own parameters (class token, position embedding: read outside
    the backbone's ``forward``) around it in the forward *and* the backward — DeepSpeed
    hooks the backward through a module's tensor outputs, which ``ImageOutput`` hides.
    Holds the backbone without owning it: no parameters, the state dict is unchanged."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        object.__setattr__(self, "backbone", backbone)   # not a child module

    def external_parameters(self) -> list[nn.Parameter]:
        """Registered with ZeRO-3 by the backend (DeepSpeed's external parameters)."""
        return list(self.backbone.parameters(recurse=False))

    def forward(self, images: Tensor, index: int) -> tuple[Tensor, Tensor, Tensor]:
        x, [(before_last, prefix_tokens)] = self.backbone.forward_intermediates(
            images, indices=[index], return_prefix_tokens=True, output_fmt="NLC")
        return x, before_last, prefix_tokens


class ViTEncoder(nn.Module):
    """timm VisionTransformer; keeps the last block's CLS→patch attention (MGCA's patch weights).

    The attention weights are recomputed for the [CLS] row only (B×H×N values) from the last
    block's q/k, so every block still runs fused SDPA attention. The backbone runs through
    timm's public ``forward_intermediates`` / ``forward_features``.
    """
    family = "vit"      # ModelDims.image_family: patch weights are attention

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        arch = VIT_ARCHS[cfg.name]
        common = dict(num_classes=0, in_chans=cfg.in_chans, img_size=cfg.image_size)
        if isinstance(arch, dict):
            self.backbone = timm.models.VisionTransformer(**arch, **common)
        else:
            self.backbone = timm.create_model(arch, pretrained=False, **common)
        self.width = self.token_width = self.backbone.embed_dim
        self.backbone.set_grad_checkpointing(cfg.gradient_checkpointing)
        if not isinstance(self.backbone.patch_drop, nn.Identity):
            raise ValueError("ViTEncoder: the timm backbone uses patch dropout, whose slot holds the masked view")
        self.backbone.patch_drop = VisiblePatches(self.backbone.num_prefix_tokens)
        self.intermediates = _BackboneIntermediates(self.backbone)

    @contextlib.contextmanager
    def visible_only(self, keep_index: Tensor):
        """Within the block, the backbone encodes only the patches at ``keep_index`` (B, V)."""
        self.backbone.patch_drop.keep_index = keep_index
        try:
            yield
        finally:
            self.backbone.patch_drop.keep_index = None

    def _cls_attention(self, block, x: Tensor) -> Tensor:
        attn = block.attn
        qkv = attn.qkv(block.norm1(x))
        batch, tokens, _ = x.shape
        qkv = qkv.reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0][:, :, :1]), attn.k_norm(qkv[1])
        scores = (q * attn.scale) @ k.transpose(-2, -1)            # (B, H, 1, N)
        return scores.softmax(dim=-1).mean(dim=1)[:, 0, 1:]        # (B, N-1) CLS→patches

    def forward(self, images: Tensor) -> ImageOutput:
        vit = self.backbone
        # The input of the last block (the output of the one before it) gives the attention.
        x, before_last, prefix_tokens = self.intermediates(images, len(vit.blocks) - 2)
        patch_weights = self._cls_attention(vit.blocks[-1], torch.cat([prefix_tokens, before_last], dim=1))
        prefix = vit.num_prefix_tokens
        return _projected(self, ImageOutput(global_vector=x[:, 0], tokens=x[:, prefix:],
                                            patch_weights=patch_weights))


class ResNetEncoder(nn.Module):
    """timm ResNet. MGCA: global = avg-pool(layer4), tokens = layer3. PRIOR: attention pool,
    tokens = layer4 (7×7 = 49, permuted to (B, HW, C) — not the official ``view`` that
    scrambles them)."""
    family = "cnn"      # ModelDims.image_family: patch weights are uniform

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.backbone = timm.create_model(CNN_ARCHS[cfg.name], pretrained=False, num_classes=0,
                                          in_chans=cfg.in_chans, global_pool="")
        self.local_layer = cfg.resnet_local_layer
        channels = {info["module"]: info["num_chs"] for info in self.backbone.feature_info}
        self.width = channels["layer4"]
        self.token_width = channels[self.local_layer]
        if cfg.resnet_global_pool == "attention":
            grid = cfg.image_size // 32
            self.pool = AttentionPool2d(self.width, feat_size=grid, num_heads=8)
        elif cfg.resnet_global_pool == "avg":
            self.pool = None
        else:
            raise ValueError(f"model.image.resnet_global_pool: expected avg|attention, "
                             f"got {cfg.resnet_global_pool!r}")
        self.backbone.set_grad_checkpointing(cfg.gradient_checkpointing)
        if cfg.resnet_token_layout not in ("permute", "official_view"):
            raise ValueError(f"model.image.resnet_token_layout: expected permute|official_view, "
                             f"got {cfg.resnet_token_layout!r}")
        self.official_view = cfg.resnet_token_layout == "official_view"
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> None:
        """Hold weights and activations in NHWC, the layout oneDNN and cuDNN convolve fastest
        (ResNet-18, 128 px, batch 32, 2 CPU cores: no-grad forward 279 → 175 ms). Only for
        copies outside DeepSpeed (the divergence encoder): DeepSpeed broadcasts and flattens
        parameters through contiguous views, so the trained encoder stays NCHW."""
        self.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last

    def forward(self, images: Tensor) -> ImageOutput:
        net = self.backbone
        x = net.maxpool(net.act1(net.bn1(net.conv1(images.contiguous(memory_format=self.memory_format)))))
        local = None
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(net, name)(x)
            if name == self.local_layer:
                local = x
        global_vector = x.mean(dim=(2, 3)) if self.pool is None else self.pool(x)
        if self.official_view:   # PRIOR encoders/image/resnet.py:94, view without permute
            tokens = local.reshape(local.shape[0], -1, local.shape[1])
        else:
            tokens = local.flatten(2).transpose(1, 2)               # (B, HW, C)
        patch_weights = torch.full(tokens.shape[:2], 1.0 / tokens.shape[1],
                                   device=tokens.device, dtype=tokens.dtype)
        return _projected(self, ImageOutput(global_vector=global_vector, tokens=tokens,
                                            patch_weights=patch_weights))


def build_image_encoder(cfg: ImageEncoderConfig) -> nn.Module:
    if cfg.name in VIT_ARCHS:
        encoder = ViTEncoder(cfg)
    elif cfg.name in CNN_ARCHS:
        encoder = ResNetEncoder(cfg)
    else:
        raise ValueError(f"model.image.name: unknown encoder {cfg.name!r}; "
                         f"valid choices: {', '.join(IMAGE_ENCODERS)}")
    if cfg.weights:
        load_backbone_weights(encoder.backbone, cfg.weights, in_chans=cfg.in_chans)
    if cfg.projection_dim:
        add_projections(encoder, cfg.projection_dim)
    return encoder
