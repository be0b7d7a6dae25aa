"""Loading backbone weights from local files, and batch-level input checks."""
from __future__ import annotations

import pytest
import timm
import torch

from kgvlp.config.schema import ImageEncoderConfig
from kgvlp.data.collate import Collator, Sample
from kgvlp.models.image import build_image_encoder
from kgvlp.models.weights import WeightsError


def test_rgb_imagenet_style_weights_load_into_a_grey_encoder_with_the_stem_summed(tmp_path):
    rgb = timm.create_model("resnet18", pretrained=False, num_classes=1000)   # with its fc head
    torch.save(rgb.state_dict(), tmp_path / "resnet18.pth")

    encoder = build_image_encoder(ImageEncoderConfig(name="resnet_test", image_size=64, in_chans=1,
                                                     weights=str(tmp_path / "resnet18.pth")))

    summed = rgb.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.allclose(encoder.backbone.conv1.weight, summed)
    assert torch.equal(encoder.backbone.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_weights_of_another_architecture_fail_naming_the_keys(tmp_path):
    other = timm.create_model("resnet34", pretrained=False, num_classes=0)
    torch.save(other.state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsError, match=r"resnet34\.pth does not fit .* missing keys .*layer"):
        build_image_encoder(ImageEncoderConfig(name="resnet_test", image_size=64,
                                               weights=str(tmp_path / "resnet34.pth")))


def test_a_missing_weights_file_is_named():
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_image_encoder(ImageEncoderConfig(name="vit_test", image_size=64, weights="/nowhere.pth"))


def test_images_of_different_shapes_in_one_batch_are_rejected_naming_the_samples(tokenizer):
    samples = [Sample(image=torch.zeros(1, 64, 64), sentences=["no pleural effusion"], index=7),
               Sample(image=torch.zeros(3, 64, 64), sentences=["heart size is normal"], index=9)]
    with pytest.raises(ValueError, match=r"sample 9: \(3, 64, 64\)"):
        Collator(tokenizer, 16)(samples)


def test_unreadable_samples_are_dropped_and_counted(tokenizer):
    samples = [Sample(image=torch.zeros(1, 8, 8), sentences=["no pleural effusion"], index=0), None, None]
    batch = Collator(tokenizer, 16)(samples)
    assert batch.size == 1 and batch.skipped == 2
