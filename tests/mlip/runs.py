"""Tiny Trainer runs with the divergence encoders (in-memory pairs with a second view)."""
from __future__ import annotations

import torch

from kgvlp.data.collate import Sample
from mlip.helpers import REPORTS

TINY = ["model.image.name=vit_test", "model.image.image_size=32", "model.text.max_length=24",
        "model.text.num_layers=2", "model.text.dropout=0.0", "objectives.mlip_global.weight=1",
        "model.services.divergence.queue_size=12", "model.services.divergence.momentum=0.9",
        "data.num_workers=0", "data.batch_size=4", "trainer.log_every=1", "trainer.progress=false",
        "trainer.lr=1e-3", "trainer.warmup_ratio=0.2"]


class ViewPairs(torch.utils.data.Dataset):
    def __init__(self, size: int = 32):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        image = torch.randn(1, 32, 32, generator=generator)
        view2 = image + 0.1 * torch.randn(1, 32, 32)      # global RNG: seeded by the trainer
        return Sample(image=image, sentences=REPORTS[index % len(REPORTS)], index=index, image_view2=view2)


def trainer(run_dir, overrides, resume=False):
    from kgvlp.config import load_experiment
    from kgvlp.engine.trainer import Trainer
    return Trainer(load_experiment(None, TINY + list(overrides)), run_dir=None if resume else run_dir,
                   resume=run_dir if resume else None, dataset=ViewPairs())
