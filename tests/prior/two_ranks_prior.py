"""The per-rank half of the two-rank prior_global test (light imports: spawned processes)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from kgvlp.models.features import Features
from kgvlp.objectives.base import ModelDims, StepContext
from kgvlp.objectives.prior_global import PriorGlobal, PriorGlobalConfig

DIMS = ModelDims(image_width=16, image_token_width=16, text_width=16, num_image_tokens=4, max_length=8)


def vectors(rows=8, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(rows, dim, generator=generator)
    return image, image + 0.7 * torch.randn(rows, dim, generator=generator)


def loss_and_grads(image, text, world=1):
    """Loss and gradients (images, texts, log scale), averaged over ranks like data parallelism."""
    image, text = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    objective = PriorGlobal(PriorGlobalConfig(temperature=0.07), DIMS)
    loss = objective(Features(image_global=image, text_global=text), StepContext()).terms["global"]
    loss.backward()
    scale_grad = objective.logit_scale.log_scale.grad.clone()
    mean_loss = loss.detach().clone()
    if world > 1:
        dist.all_reduce(mean_loss)
        dist.all_reduce(scale_grad)
    return {"loss": mean_loss / world, "image_grad": image.grad / world, "text_grad": text.grad / world,
            "scale_grad": scale_grad / world}


def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        image, text = vectors()
        rows = slice(rank * 4, (rank + 1) * 4)
        torch.save(loss_and_grads(image[rows], text[rows], world=2), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()   # a rank tearing gloo down while its peer still talks to it aborts the peer
    finally:
        dist.destroy_process_group()
