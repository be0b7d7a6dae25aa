"""Detection: torchvision's Faster R-CNN head on the encoder's token map, mAP (torchmetrics).

MGCA puts a YOLOv3 head on a frozen ResNet-50; we use torchvision's maintained Faster
R-CNN instead (no YOLO head is maintained in torchvision) on one feature map: the encoder's
``tokens`` reshaped to their grid (ViT patches at stride 16; ResNet's token layer, layer3
at stride 16 by default). Frozen encoder by default; mAP over IoU 0.4:0.05:0.75 as MGCA.
Images are already normalised, so the detector's own resize/normalise is an identity.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from kgvlp.progress import track

from kgvlp.eval.features import loader
from kgvlp.eval.metrics import mean_average_precision
from kgvlp.eval.on_encoder import OnEncoder


@dataclass
class DetConfig:
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 8
    finetune: bool = False


class TokenMapBackbone(OnEncoder):
    """The image encoder as a torchvision detection backbone: one (Dt, g, g) map named "0"."""

    def __init__(self, encoder: nn.Module, finetune: bool):
        super().__init__(encoder, finetune)
        self.out_channels = encoder.token_width

    def forward(self, images: Tensor) -> OrderedDict:
        with self.encoder_grad():
            tokens = self.encoder(images).tokens
        batch, count, width = tokens.shape
        grid = int(round(count ** 0.5))
        return OrderedDict([("0", tokens.transpose(1, 2).reshape(batch, width, grid, grid))])


def build_detector(encoder: nn.Module, num_classes: int, image_size: int, in_chans: int, finetune: bool):
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    sizes = tuple(s for s in (8, 16, 32, 64, 128, 256) if s <= image_size)
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(TokenMapBackbone(encoder, finetune), num_classes=num_classes + 1,  # + background
                      rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
                      min_size=image_size, max_size=image_size,
                      image_mean=[0.0] * in_chans, image_std=[1.0] * in_chans)


def _targets(samples, device) -> list[dict]:
    out = []
    for s in samples:
        boxes = s.boxes.reshape(-1, 4).float()
        # NaN rows (instances without a box) and unknown classes (-1) are not targets
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (s.instance_labels >= 0)
        out.append({"boxes": boxes[keep].to(device), "labels": (s.instance_labels[keep] + 1).to(device)})
    return out


def train_detector(encoder: nn.Module, train, test, num_classes: int, image_size: int, in_chans: int,
                   seed: int, cfg: DetConfig, device, progress: bool = True) -> dict[str, float]:
    torch.manual_seed(seed)
    detector = build_detector(encoder, num_classes, image_size, in_chans, cfg.finetune).to(device)
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=cfg.lr)
    for _ in track(range(cfg.epochs), "detection", enabled=progress):
        detector.train()
        for samples in loader(train, cfg.batch_size, shuffle=True, seed=seed):
            images = [s.image.to(device) for s in samples]
            losses = detector(images, _targets(samples, device))
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
    detector.eval()
    predictions, targets = [], []
    with torch.no_grad():
        for samples in loader(test, cfg.batch_size):
            predictions += detector([s.image.to(device) for s in samples])
            targets += _targets(samples, "cpu")
    return mean_average_precision(predictions, targets)
