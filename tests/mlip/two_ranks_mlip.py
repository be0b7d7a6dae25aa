"""Per-rank half of the two-rank mlip_global + queue test (light: spawned processes import it)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from kgvlp.models.features import Features, Need
from kgvlp.modules.divergence import DivergenceFeatures, DivergenceQueues
from kgvlp.objectives.base import ModelDims, StepContext
from kgvlp.objectives.mlip_global import MLIPGlobal, MLIPGlobalConfig

ROWS, DIM = 8, 16


def step_inputs(step: int):
    """Online and divergence embeddings of one global batch (float64, normalised)."""
    g = torch.Generator().manual_seed(step)
    make = lambda: F.normalize(torch.randn(ROWS, DIM, generator=g, dtype=torch.float64), dim=-1)  # noqa: E731
    return make(), make(), make(), make()


def run_steps(rows: slice, world: int, steps: int = 2, alpha: float = 0.4):
    """mlip_global on ``rows`` of each step's batch, with the queue written in between.
    Returns per step: (loss averaged over ranks, image grad, text grad) as data parallelism sees them."""
    objective = MLIPGlobal(MLIPGlobalConfig(distill_alpha=alpha), ModelDims(8, 8, 8, 4, 8, embed_dim=DIM))
    queues = DivergenceQueues(size=12, dim=DIM).double()
    out = []
    for step in range(steps):
        image, text, div_image, div_text = (x[rows] for x in step_inputs(step))
        image.requires_grad_(True)
        text.requires_grad_(True)
        q_image, q_text, valid = queues.view()
        divergence = DivergenceFeatures(div_image, div_text, q_image, q_text, valid)
        features = Features(image_embed=image, text_embed=text, extras={Need.DIVERGENCE.value: divergence})
        loss = sum(objective(features, StepContext(step=step)).terms.values())
        loss.backward()
        total = loss.detach().clone()
        if world > 1:
            dist.all_reduce(total)
        out.append((total / world, image.grad / world, text.grad / world))
        queues.stage(div_image, div_text)
        queues.commit()
    return out, queues.image.features.clone()


def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        half = ROWS // 2
        torch.save(run_steps(slice(rank * half, (rank + 1) * half), world=2), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()   # a rank tearing gloo down while its peer still talks to it aborts the peer
    finally:
        dist.destroy_process_group()
