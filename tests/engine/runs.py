"""Tiny training runs shared by the engine tests and their spawned ranks.

A run trains MGCA (ITA + CTA + CPA) on an in-memory dataset of real-looking reports and
seeded random images, with a 2-block ViT and MiniLM cut to 2 layers, dropout off (so that
1 process and 2 ranks see identical computations).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from kgvlp.config import load_experiment
from kgvlp.data.collate import Sample
from kgvlp.data.text import split_sentences
from kgvlp_tiny import FALLBACK_REPORTS
from two_ranks import free_port

REPORTS = FALLBACK_REPORTS  # fixed text: the runs must not depend on torchxrayvision

TINY = ["model.image.name=vit_test", "model.image.image_size=32", "model.text.max_length=24",
        "model.text.num_layers=2", "model.text.dropout=0.0",
        "objectives.ita.weight=1", "objectives.cta.weight=1", "objectives.cta.hidden_dim=64",
        "objectives.cpa.weight=1", "objectives.cpa.num_prototypes=8",
        "objectives.cpa.freeze_prototypes_epochs=0.5",
        "data.num_workers=0", "trainer.log_every=1", "trainer.progress=false",
        "trainer.lr=1e-3", "trainer.warmup_ratio=0.2"]


class TinyPairs(torch.utils.data.Dataset):
    """``size`` image–report pairs; ``nan_at`` puts NaN pixels into that sample."""

    def __init__(self, size: int = 32, nan_at: int | None = None):
        self.size, self.nan_at = size, nan_at

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        image = torch.randn(1, 32, 32, generator=generator)
        image += torch.rand(()) * 0.1          # global RNG: seeded per sample by the trainer
        if index == self.nan_at:
            image[:] = float("nan")
        return Sample(image=image, sentences=split_sentences(REPORTS[index % len(REPORTS)]), index=index)


def experiment(overrides: list[str]):
    return load_experiment(None, TINY + list(overrides))


def train(run_dir: str, overrides: list[str], resume: bool = False, stop_at: int | None = None,
          dataset=None) -> list[dict]:
    """Train; returns the per-step logged rows. ``stop_at``: die right after that step's
    checkpoint is written, like a killed job."""
    from kgvlp.engine import trainer as trainer_module
    trainer = trainer_module.Trainer(experiment(overrides), run_dir=None if resume else Path(run_dir),
                                     resume=Path(run_dir) if resume else None,
                                     dataset=dataset or TinyPairs(), val_dataset=TinyPairs(size=8))
    if stop_at is not None:
        original = trainer.save_checkpoint

        def save_then_die():
            path = original()
            if trainer.step == stop_at:
                raise KeyboardInterrupt(f"killed after step {stop_at}")
            return path
        trainer.save_checkpoint = save_then_die
    try:
        return trainer.train().history
    except KeyboardInterrupt:
        return []


def rank_main(rank: int, world: int, port: int, run_dir: str, overrides: list[str], mode: str,
              out: str) -> None:
    """Entry point of one spawned rank: sets the launcher's variables, trains, writes rows."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    if mode == "full":
        rows = train(run_dir, overrides)
    elif mode.startswith("killed:"):
        rows = train(run_dir, overrides, stop_at=int(mode.split(":")[1]))
    else:
        rows = train(run_dir, overrides, resume=True)
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    torch.distributed.barrier()   # a rank tearing gloo down while its peer still talks to it aborts the peer
    torch.distributed.destroy_process_group()


def gradient_rank_main(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    """One rank of the model-level check: loss and data-parallel-averaged gradients of the
    whole VLPModel on this rank's half of an 8-pair batch (world=1: the whole batch)."""
    import torch.distributed as dist

    from kgvlp.data.collate import Collator
    from kgvlp.models.text import load_tokenizer
    from kgvlp.models.vlp import VLPModel
    from kgvlp.objectives import REGISTRY
    from kgvlp.objectives.base import StepContext
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = experiment(overrides).config
    torch.manual_seed(0)
    # float64: the heads' BatchNorm divides by the spread of nearly identical report
    # vectors, which amplifies float32 rounding past any useful tolerance.
    model = VLPModel(cfg.model, cfg.objectives, REGISTRY).double()
    dataset = TinyPairs()
    batch = Collator(load_tokenizer(cfg.model.text), cfg.model.text.max_length)([dataset[i] for i in range(8)])
    batch.images = batch.images.double()
    rows = 8 // world
    loss, _ = model(batch.select(slice(rank * rows, (rank + 1) * rows)), StepContext(step=10, epoch=2.0))
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    for value in grads.values():          # what data parallelism does: mean over ranks
        dist.all_reduce(value)
        value /= world
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / world, "grads": grads}, out)
    dist.barrier()
    dist.destroy_process_group()


def losses(rows: list[dict], start: int = 0) -> dict[int, float]:
    return {row["step"]: row["loss/total"] for row in rows if row["step"] > start}


def run_ranks(world: int, run_dir: Path, overrides: list[str], mode: str) -> list[dict]:
    """Train on ``world`` spawned gloo ranks; returns rank 0's logged rows."""
    out = run_dir.parent / f"{run_dir.name}-{mode.replace(':', '')}.json"
    mp.start_processes(rank_main, args=(world, free_port(), str(run_dir), overrides, mode, str(out)),
                       nprocs=world, join=True, start_method="spawn")
    return json.loads(out.read_text())
