"""The per-rank half of the two-rank tests in test_objectives_mgca.py (kept in a light module:
spawned processes import it, so it must not pull in transformers or the test fixtures)."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.nn.functional as F

from kgvlp.models.features import Features
from kgvlp.objectives.base import ModelDims, StepContext
from kgvlp.objectives.cpa import CPA, CPAConfig
from kgvlp.objectives.ita import ITA, ITAConfig

AFTER_FREEZE = StepContext(step=10, epoch=1.0)


def embeddings(rows=8, dim=128, seed=0):
    """Fixed L2-normalised image/text embeddings whose pairs are correlated."""
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(image + 0.5 * torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)
    return image.float(), text.float()


def make_cpa(quirks=False, num_prototypes=16, seed=0) -> CPA:
    torch.manual_seed(seed)
    dims = ModelDims(image_width=8, image_token_width=8, text_width=8, num_image_tokens=4, max_length=8)
    return CPA(CPAConfig(num_prototypes=num_prototypes, official_quirks=quirks), dims)


def make_objective(name):
    if name == "ita":
        return ITA(ITAConfig(), ModelDims(8, 8, 8, 4, 8))
    if name == "ita_quirk":
        return ITA(ITAConfig(official_quirks=True), ModelDims(8, 8, 8, 4, 8))
    return make_cpa(num_prototypes=6)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _one_objective(name, local_image, local_text, world):
    """This rank's loss and gradients, averaged over ranks as data parallelism does."""
    local_image = local_image.clone().requires_grad_(True)
    local_text = local_text.clone().requires_grad_(True)
    objective = make_objective(name)
    out = objective(Features(image_embed=local_image, text_embed=local_text), AFTER_FREEZE)
    loss = sum(out.terms.values())
    loss.backward()   # all_gather's backward sums every rank's gradient into the owner's rows
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    result = {"rank_loss": loss.detach(), "loss": mean_loss / world,
              "image_grad": local_image.grad / world, "text_grad": local_text.grad / world}
    if name == "cpa":
        prototype_grad = objective.prototypes.weight.grad.clone()
        dist.all_reduce(prototype_grad)
        result["prototype_grad"] = prototype_grad / world
    return result


def worker(rank, port, image, text, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        world = dist.get_world_size()
        half = image.shape[0] // world
        rows = slice(rank * half, (rank + 1) * half)
        results = {name: _one_objective(name, image[rows], text[rows], world)
                   for name in ("ita", "cpa", "ita_quirk")}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()   # a rank tearing gloo down while its peer still talks to it aborts the peer
    finally:
        dist.destroy_process_group()
