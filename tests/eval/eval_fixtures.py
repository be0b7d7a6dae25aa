"""Helpers for the eval tests: a tiny downstream dataset shaped like SynthCXR's items, and tiny models for the eval tests.

Each image is noise plus one bright square per present finding, at a place fixed per
finding, so labels, masks, boxes and report mentions all agree and are learnable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.models.vlp import VLPModel

IMAGE_SIZE = 64
MAX_LENGTH = 32

LABELS = ["cardiomegaly", "pneumothorax", "nodule"]
CORNERS = {0: (8, 8), 1: (8, 40), 2: (40, 24)}   # top-left (y, x) of each finding's square
SQUARE = 16


@dataclass
class Item:
    image: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    instance_labels: torch.Tensor
    sentences: list[str]
    mentions: list[dict] = field(default_factory=list)


class TinyFindings(Dataset):
    label_names = LABELS

    def __init__(self, size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(size):
            present = (torch.rand(len(LABELS), generator=generator) < 0.5).nonzero().flatten().tolist()
            image = 0.3 * torch.randn(1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
            masks, boxes, sentences, mentions = [], [], [], []
            words = 0
            for row, k in enumerate(present):
                y, x = CORNERS[k]
                mask = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
                mask[y:y + SQUARE, x:x + SQUARE] = True
                image[0][mask] += 1.5
                masks.append(mask)
                boxes.append([x, y, x + SQUARE, y + SQUARE])
                sentences.append(f"there is {LABELS[k]}")
                mentions.append({"finding": LABELS[k], "instances": [row], "negated": False, "words": [words + 2]})
                words += 3
            absent = [k for k in range(len(LABELS)) if k not in present]
            if absent:
                sentences.append(f"no {LABELS[absent[0]]}")
                mentions.append({"finding": LABELS[absent[0]], "instances": [], "negated": True, "words": [words + 1]})
            labels = torch.zeros(len(LABELS))
            labels[present] = 1.0
            self.items.append(Item(image=image, labels=labels,
                                   masks=torch.stack(masks) if masks else torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool),
                                   boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                   instance_labels=torch.tensor(present, dtype=torch.long),
                                   sentences=sentences, mentions=mentions))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def tiny_model_config(image: str = "vit_test") -> ModelConfig:
    return ModelConfig(image=ImageEncoderConfig(name=image, image_size=IMAGE_SIZE),
                       text=TextEncoderConfig(max_length=MAX_LENGTH, num_layers=2))


def make_tiny_model(image: str = "vit_test", objectives=("ita", "cta"), seed: int = 0) -> VLPModel:
    from kgvlp.objectives import REGISTRY
    torch.manual_seed(seed)
    return VLPModel(tiny_model_config(image), {n: REGISTRY[n].Config() for n in objectives}, REGISTRY)
