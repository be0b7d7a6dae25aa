"""Linear probe in MGCA's protocol, on features extracted once.

MGCA (``mgca/models/ssl_finetuner.py``): frozen backbone in eval mode, one Linear on the
global feature, AdamW lr 5e-4, weight decay 1e-6, batch 48, at most 50 epochs, early
stopping on validation loss with patience 10. Because the backbone is frozen and in eval
mode, its features do not change between epochs, so they are computed once per split and
the Linear is trained on the cached vectors — the same optimisation, minutes faster.
Multi-label: BCE-with-logits, macro AUROC; multi-class: cross-entropy, accuracy.

Two deviations, both for label subsets far smaller than MGCA's (1% of CheXpert is ~2,000
images, ~40 steps an epoch; 1% of a SynthCXR train split can be a few dozen), where the
protocol as written takes a handful of optimiser steps and the score measures the Linear's
random initialisation rather than the features:
- ``standardize``: features are z-scored with the mean/std of the *whole* train split
  (no labels used), as MAE's probe does with a non-affine BatchNorm before the Linear;
- ``min_steps_per_epoch``: an epoch is at least this many batches (the labelled subset
  reshuffled and repeated), so 50 epochs are at least 50·N optimiser steps.
Set ``standardize=False, min_steps_per_epoch=1`` for MGCA's exact procedure.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgvlp.eval.data import fraction_indices
from kgvlp.eval.metrics import accuracy, macro_auroc


@dataclass
class ProbeConfig:
    lr: float = 5e-4
    weight_decay: float = 1e-6
    batch_size: int = 48
    max_epochs: int = 50
    patience: int = 10
    standardize: bool = True
    min_steps_per_epoch: int = 20


def _loss(logits: Tensor, targets: Tensor, multiclass: bool) -> Tensor:
    if multiclass:
        return F.cross_entropy(logits, targets.argmax(dim=1))
    return F.binary_cross_entropy_with_logits(logits, targets)


def train_probe(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, multiclass: bool,
                seed: int, cfg: ProbeConfig = ProbeConfig(), device: torch.device | str = "cpu") -> tuple[nn.Linear, dict]:
    """Fit one Linear with early stopping on validation loss; returns the best-val-loss
    weights and {epochs, best_epoch, best_val_loss}."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = nn.Linear(train_x.shape[1], train_y.shape[1]).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))
    best_loss, best_state, best_epoch, waited, epoch = float("inf"), None, -1, 0, 0
    for epoch in range(cfg.max_epochs):
        probe.train()
        steps = 0
        while steps < cfg.min_steps_per_epoch:
            for rows in torch.randperm(len(train_x), generator=generator).split(cfg.batch_size):
                optimizer.zero_grad(set_to_none=True)
                _loss(probe(train_x[rows]), train_y[rows], multiclass).backward()
                optimizer.step()
                steps += 1
        probe.eval()
        with torch.no_grad():
            val_loss = float(_loss(probe(val_x), val_y, multiclass))
        if val_loss < best_loss:
            best_loss, best_state, best_epoch, waited = val_loss, copy.deepcopy(probe.state_dict()), epoch, 0
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    probe.load_state_dict(best_state)
    return probe, {"epochs": epoch + 1, "best_epoch": best_epoch + 1, "best_val_loss": best_loss}


def score_probe(probe: nn.Linear, test_x: Tensor, test_y: Tensor, multiclass: bool) -> dict[str, float]:
    with torch.no_grad():
        logits = probe(test_x.to(next(probe.parameters()).device)).float().cpu()
    if multiclass:
        return {"accuracy": accuracy(logits, test_y.argmax(dim=1))}
    macro, per_class = macro_auroc(logits.sigmoid(), test_y)
    return {"auroc": macro, "classes_scored": len(per_class)}


def linear_probe(train, val, test, fraction: float, seed: int, multiclass: bool,
                 cfg: ProbeConfig = ProbeConfig(), device="cpu") -> dict[str, float]:
    """One probe run on cached ImageFeatures of the three splits; returns its metrics."""
    rows = torch.as_tensor(fraction_indices(train.labels, fraction, seed))
    mean, std = train.global_vector.mean(dim=0), train.global_vector.std(dim=0).clamp(min=1e-6)
    scale = (lambda x: (x - mean) / std) if cfg.standardize else (lambda x: x)
    probe, info = train_probe(scale(train.global_vector[rows]), train.labels[rows], scale(val.global_vector),
                              val.labels, multiclass, seed, cfg, device)
    return {**score_probe(probe, scale(test.global_vector), test.labels, multiclass), "train_size": len(rows), **info}
