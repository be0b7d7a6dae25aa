"""Name maps, both directions, and their failures."""
from __future__ import annotations

import pytest
import torch

from kgvlp.export import names

VIT = {"image_encoder.backbone.cls_token": torch.randn(1, 1, 4),
       "image_encoder.backbone.patch_embed.proj.weight": torch.randn(4, 1, 2, 2),
       "image_encoder.backbone.blocks.0.attn.qkv.weight": torch.randn(12, 4),
       "image_encoder.backbone.blocks.0.attn.qkv.bias": torch.randn(12),
       "image_encoder.backbone.norm.weight": torch.randn(4),
       "text_encoder.bert.embeddings.word_embeddings.weight": torch.randn(5, 4),
       "projections.image.net.0.weight": torch.randn(8, 4),
       "projections.image.net.1.running_var": torch.rand(8),
       "objectives.cta.proj.weight": torch.randn(2, 2)}


@pytest.mark.parametrize("build", [names.timm_map, names.hf_text_map, names.hf_vit_map, names.heads_map])
def test_to_format_then_from_format_gives_back_every_tensor(build):
    entries = build(list(VIT))

    back = names.from_format(names.to_format(VIT, entries), entries, "test")

    assert back.keys() == {e.source for e in entries}
    assert all(torch.equal(back[k], VIT[k]) for k in back)


def test_vit_qkv_splits_into_query_key_value_in_order():
    entries = names.hf_vit_map(list(VIT))

    out = names.to_format(VIT, entries)

    qkv = VIT["image_encoder.backbone.blocks.0.attn.qkv.weight"]
    assert torch.equal(out["layers.0.attention.q_proj.weight"], qkv[:4])
    assert torch.equal(out["layers.0.attention.v_proj.weight"], qkv[8:])
    assert out["embeddings.cls_token"] is not None and "layernorm.weight" in out


def test_open_clip_stem_spreads_the_grey_kernel_over_rgb():
    entries = names.open_clip_map(list(VIT), "image_encoder.backbone.patch_embed.proj.weight")

    out = names.to_format(VIT, entries)

    stem = out["visual.trunk.patch_embed.proj.weight"]
    grey = VIT["image_encoder.backbone.patch_embed.proj.weight"]
    assert stem.shape[1] == 3 and torch.allclose(stem.sum(dim=1, keepdim=True), grey, atol=1e-6)
    assert "text.transformer.embeddings.word_embeddings.weight" in out


def test_from_format_names_missing_and_unexpected_keys():
    entries = names.timm_map(list(VIT))
    tensors = names.to_format(VIT, entries)
    tensors["extra.weight"] = tensors.pop("norm.weight")

    with pytest.raises(names.NameMapError, match=r"missing keys \['norm.weight'\].*unexpected keys \['extra.weight'\]"):
        names.from_format(tensors, entries, "timm")


def test_diff_maps_names_the_entries_that_changed():
    entries = names.timm_map(list(VIT))
    recorded = names.serialise(entries)
    recorded[0] = ["renamed_cls_token", recorded[0][1], "copy"]

    lines = names.diff_maps(recorded, entries)

    assert any("renamed_cls_token" in line for line in lines)
    assert any("'cls_token'" in line for line in lines)
    assert len(lines) == 2
