"""Image transforms on tensors: resize long side + pad, crop, small affine, jitter, normalise.

MGCA: resize to 256, RandomCrop 224 for training and CenterCrop 224 for evaluation,
normalise with mean = std = 0.5. Horizontal flip is off by default because laterality
matters in radiographs (a right effusion must stay on the image left).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kgvlp.config.schema import AugmentConfig


def resize_pad(image: Tensor, size: int) -> Tensor:
    """(C, H, W) → (C, size, size): long side resized to ``size``, short side zero-padded."""
    _, h, w = image.shape
    if (h, w) != (size, size):
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        image = F.pad(image, (0, size - nw, 0, size - nh))
    return image


def resize_pad_numpy(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) → uint8 (size, size), as ``resize_pad`` (used when writing a cache)."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32))[None]
    out = resize_pad(tensor, size)[0].round().clamp(0, 255)
    return out.to(torch.uint8).numpy()


class ImageTransform:
    """uint8 (H, W) array → float (1, crop, crop) tensor."""

    def __init__(self, resize: int, crop: int, train: bool, augment: AugmentConfig | None = None):
        self.resize, self.crop, self.train = resize, crop, train
        self.augment = augment or AugmentConfig()

    def __call__(self, image: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.array(image, dtype=np.float32)).div_(255.0)[None]
        x = resize_pad(x, self.resize)
        aug = self.augment
        if self.train and aug.random_crop:
            top = int(torch.randint(0, self.resize - self.crop + 1, ()))
            left = int(torch.randint(0, self.resize - self.crop + 1, ()))
        else:
            top = left = (self.resize - self.crop) // 2
        x = x[:, top:top + self.crop, left:left + self.crop]
        if self.train:
            x = self._random_affine(x)
            if aug.color_jitter > 0:
                j = aug.color_jitter
                brightness = 1 + (torch.rand(()) * 2 - 1) * j
                contrast = 1 + (torch.rand(()) * 2 - 1) * j
                x = ((x - x.mean()) * contrast + x.mean()) * brightness
                x = x.clamp_(0, 1)
            if aug.horizontal_flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        return (x - 0.5) / 0.5

    def _random_affine(self, x: Tensor) -> Tensor:
        aug = self.augment
        if not (aug.affine_degrees or aug.affine_translate or aug.affine_scale):
            return x
        angle = math.radians(float((torch.rand(()) * 2 - 1) * aug.affine_degrees))
        scale = 1 + float((torch.rand(()) * 2 - 1) * aug.affine_scale)
        tx, ty = ((torch.rand(2) * 2 - 1) * aug.affine_translate * 2).tolist()  # grid units are [-1, 1]
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=x.dtype)[None]
        grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
        return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
