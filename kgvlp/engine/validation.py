"""Validation loss during pretraining and early stopping on it (MGCA's code: Lightning
validates once per epoch and ``EarlyStopping(monitor="val_loss", patience=5, mode="min")``
stops training; ``ModelCheckpoint(monitor="val_loss")`` keeps the best weights).

The validation loss is the step's weighted total loss (the objectives and weights of the
current stage) on ``trainer.validation.split``, averaged over its pairs, with the model in
eval mode and without gradients. The split is sharded evenly over ranks, in fixed
batches of ``data.batch_size`` (every rank runs the same number, so objectives that gather
the global batch stay in step). The RNG state is restored afterwards: a run that validates
trains exactly as one that does not. Objectives advance their state only in training mode
(services' ``complete`` and ``after_step``), so validation changes no queue or bank.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from kgvlp.config.schema import ValidationConfig


@dataclass
class EarlyStopping:
    """Best validation loss so far and how many validations have not improved on it
    (Lightning's rule: improved when ``loss < best - min_delta``; stop once ``waited``
    reaches ``patience``)."""
    patience: int | None
    min_delta: float = 0.0
    best: float = float("inf")
    best_step: int = -1
    waited: int = 0

    def update(self, loss: float, step: int) -> bool:
        """Record a validation; True when it is the best so far."""
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.waited = loss, step, 0
            return True
        self.waited += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.waited >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.waited = state["best"], state["best_step"], state["waited"]


class Validator:
    """The validation split of the run's data and the loss on it."""

    def __init__(self, cfg: ValidationConfig, data_cfg, collate, rank: int, world: int, dataset=None):
        """``dataset``: the validation pairs; default the ``cfg.split`` rows of the run's data
        (without augmentation)."""
        self.cfg = cfg
        if dataset is None:
            from kgvlp.data import build_pretrain_dataset
            dataset = build_pretrain_dataset(dataclasses.replace(data_cfg, split=cfg.split), train=False)
        per_rank = len(dataset) // (world * data_cfg.batch_size) * data_cfg.batch_size
        if cfg.max_batches is not None:
            per_rank = min(per_rank, cfg.max_batches * data_cfg.batch_size)
        if per_rank == 0:
            raise ValueError(f"trainer.validation.split {cfg.split!r}: {len(dataset)} pairs are fewer than "
                             f"one batch of {data_cfg.batch_size} per rank on {world} rank(s)")
        rows = list(range(rank * per_rank, (rank + 1) * per_rank))
        self.pairs = per_rank * world
        self.loader = DataLoader(torch.utils.data.Subset(dataset, rows), batch_size=data_cfg.batch_size,
                                 shuffle=False, collate_fn=collate, num_workers=0, drop_last=True)

    def every(self, steps_per_epoch: int) -> int:
        return max(1, round(self.cfg.every_epochs * steps_per_epoch))

    @torch.no_grad()
    def loss(self, backend, ctx) -> float:
        from kgvlp.engine.trainer import rng_state, set_rng_state
        state = rng_state()
        module = backend.module
        module.eval()
        try:
            total, rows = torch.zeros((), dtype=torch.float64, device=backend.device), 0
            for batch in self.loader:
                loss, _ = backend.forward(batch, ctx)
                count = batch.images.shape[0]
                total += loss.detach().double() * count
                rows += count
            summed = torch.stack([total, torch.tensor(float(rows), dtype=torch.float64, device=total.device)])
            if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
                torch.distributed.all_reduce(summed)
            summed = summed.cpu()   # once per validation
        finally:
            module.train()
            set_rng_state(state)
        return float(summed[0] / summed[1].clamp(min=1))
