"""Segmentation: the image encoder (frozen or fine-tuned) + a decoder, Dice at 0.5.

MGCA: UNet on ResNet-50 (here segmentation-models-pytorch's ``UnetDecoder`` fed the
encoder's five stages), a SETR-style progressive-upsampling decoder on ViT tokens; frozen
encoder; loss 10·focal − log(soft Dice); Dice per image at threshold 0.5. The target has
one channel per class that the dataset has masks for (union of that class's instances).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss
from kgvlp.progress import track

from kgvlp.eval.data import EvalSample
from kgvlp.eval.features import loader
from kgvlp.eval.metrics import dice_summary
from kgvlp.eval.on_encoder import OnEncoder
from kgvlp.models.image import ResNetEncoder, ViTEncoder


@dataclass
class SegConfig:
    epochs: int = 10
    lr: float = 2e-4
    batch_size: int = 16
    finetune: bool = False      # False: encoder frozen in eval mode (MGCA)
    focal_weight: float = 10.0


class ProgressiveUpsampling(nn.Module):
    """SETR-PUP: tokens → (D, g, g) map → [conv3×3–BN–ReLU–×2 upsample] until the image size."""

    def __init__(self, width: int, num_classes: int, grid: int, image_size: int, channels: int = 128):
        super().__init__()
        self.grid = grid
        steps = max(1, round(math.log2(image_size / grid)))
        blocks, in_ch = [], width
        for _ in range(steps):
            blocks += [nn.Conv2d(in_ch, channels, 3, padding=1), nn.BatchNorm2d(channels),
                       nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="bilinear")]
            in_ch = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        batch, count, width = tokens.shape
        feature_map = tokens.transpose(1, 2).reshape(batch, width, self.grid, self.grid)
        return self.head(self.blocks(feature_map))


class ResNetUnet(nn.Module):
    """smp's UnetDecoder on the stages (input, act1, layer1…layer4) of a timm ResNet."""

    def __init__(self, encoder: ResNetEncoder, num_classes: int, in_chans: int):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
        stages = [in_chans] + [info["num_chs"] for info in encoder.backbone.feature_info]
        decoder_channels = (256, 128, 64, 32, 16)
        self.decoder = UnetDecoder(encoder_channels=stages, decoder_channels=decoder_channels, n_blocks=5)
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    @staticmethod
    def stages(encoder: ResNetEncoder, images: Tensor) -> list[Tensor]:
        net = encoder.backbone
        x = net.act1(net.bn1(net.conv1(images)))
        out = [images, x]
        x = net.maxpool(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(net, name)(x)
            out.append(x)
        return out

    def forward(self, stages: list[Tensor]) -> Tensor:
        return self.head(self.decoder(stages))


class Segmenter(OnEncoder):
    """Encoder + decoder; with a frozen encoder its features are computed under no_grad."""

    def __init__(self, encoder: nn.Module, num_classes: int, image_size: int, in_chans: int, finetune: bool):
        super().__init__(encoder, finetune)
        self.image_size = image_size
        if isinstance(encoder, ViTEncoder):
            grid = image_size // encoder.backbone.patch_embed.patch_size[0]
            self.decoder = ProgressiveUpsampling(encoder.token_width, num_classes, grid, image_size)
        elif isinstance(encoder, ResNetEncoder):
            self.decoder = ResNetUnet(encoder, num_classes, in_chans)
        else:
            raise TypeError(f"segmentation supports ViTEncoder and ResNetEncoder, got {type(encoder).__name__}")

    def _encode(self, images: Tensor):
        if isinstance(self.encoder, ViTEncoder):
            return self.encoder(images).tokens
        return ResNetUnet.stages(self.encoder, images)

    def forward(self, images: Tensor) -> Tensor:
        with self.encoder_grad():
            features = self._encode(images)
        logits = self.decoder(features)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def class_masks(sample: EvalSample, num_classes: int) -> Tensor:
    """(K, S, S) bool: union of each class's instance masks."""
    size = sample.image.shape[-2:]
    target = torch.zeros(num_classes, *size, dtype=torch.bool)
    if sample.masks is not None and sample.instance_labels is not None:
        for mask, label in zip(sample.masks, sample.instance_labels.tolist()):
            if label >= 0:  # -1: a finding outside label_names
                target[label] |= mask.bool()
    return target


def seg_loss(logits: Tensor, target: Tensor, focal_weight: float) -> Tensor:
    """MGCA's 10·focal − log(soft Dice)."""
    target = target.float()
    focal = sigmoid_focal_loss(logits, target, reduction="mean")
    probs = logits.sigmoid()
    soft_dice = (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    return focal_weight * focal - torch.log(soft_dice)


def train_segmenter(encoder: nn.Module, train, test, num_classes: int, image_size: int, in_chans: int,
                    seed: int, cfg: SegConfig, device, progress: bool = True) -> dict[str, float]:
    torch.manual_seed(seed)
    model = Segmenter(encoder, num_classes, image_size, in_chans, cfg.finetune).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    for _ in track(range(cfg.epochs), "segmentation", enabled=progress):
        model.train()
        for samples in loader(train, cfg.batch_size, shuffle=True, seed=seed):
            images = torch.stack([s.image for s in samples]).to(device)
            target = torch.stack([class_masks(s, num_classes) for s in samples]).to(device)
            optimizer.zero_grad(set_to_none=True)
            seg_loss(model(images), target, cfg.focal_weight).backward()
            optimizer.step()
    model.eval()
    predicted, targets = [], []
    with torch.no_grad():
        for samples in loader(test, cfg.batch_size):
            images = torch.stack([s.image for s in samples]).to(device)
            predicted.append((model(images).sigmoid() > 0.5).cpu())
            targets.append(torch.stack([class_masks(s, num_classes) for s in samples]))
    return dice_summary(torch.cat(predicted), torch.cat(targets))
