"""The ViT runs through timm's public API (forward_intermediates, forward_features and the
patch_drop slot) and gives exactly what the block-by-block forward it replaced gave."""
from __future__ import annotations

import torch

from kgvlp.config.schema import ImageEncoderConfig
from kgvlp.models.image import ViTEncoder
from kgvlp.modules.masked_view import MaskedViewConfig, MaskedViewService


def tiny_vit() -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(ImageEncoderConfig(name="vit_test", image_size=32, in_chans=1)).eval()


def embedded(vit, images: torch.Tensor) -> torch.Tensor:
    """[CLS] + patches with their position embeddings, written out (vit_test: one prefix token)."""
    patches = vit.patch_embed(images)
    return torch.cat([vit.cls_token.expand(len(images), -1, -1), patches], dim=1) + vit.pos_embed


def test_encoder_output_equals_the_block_by_block_forward():
    encoder, images = tiny_vit(), torch.randn(2, 1, 32, 32)
    vit = encoder.backbone

    out = encoder(images)

    x = vit.norm_pre(embedded(vit, images))
    for block in vit.blocks[:-1]:
        x = block(x)
    weights = encoder._cls_attention(vit.blocks[-1], x)
    x = vit.norm(vit.blocks[-1](x))
    assert torch.equal(out.global_vector, x[:, 0]) and torch.equal(out.tokens, x[:, 1:])
    assert torch.equal(out.patch_weights, weights)


class _Model:
    def __init__(self, encoder):
        self.image_encoder = encoder


class _Batch:
    def __init__(self, images):
        self.images = images


def test_masked_view_encodes_exactly_the_visible_patches():
    encoder, images = tiny_vit(), torch.randn(2, 1, 32, 32)
    vit, service = encoder.backbone, MaskedViewService(MaskedViewConfig(mask_ratio=0.5), _Model(encoder))

    torch.manual_seed(3)
    view = service.provide(_Model(encoder), _Batch(images), None)

    x = embedded(vit, images)
    visible = torch.gather(x[:, 1:], 1, view.keep_index[..., None].expand(-1, -1, x.shape[-1]))
    x = vit.norm(vit.blocks(vit.norm_pre(torch.cat([x[:, :1], visible], dim=1))))
    assert view.tokens.shape == (2, 2, vit.embed_dim)
    assert torch.equal(view.tokens, x[:, 1:])
    assert view.hidden.sum().item() == 4 and not view.hidden.gather(1, view.keep_index).any()


def test_outside_the_masked_view_every_patch_is_encoded_again():
    encoder, images = tiny_vit(), torch.randn(1, 1, 32, 32)
    with encoder.visible_only(torch.tensor([[0]])):
        assert encoder.backbone.forward_features(images).shape[1] == 2

    assert encoder(images).tokens.shape[1] == 4
