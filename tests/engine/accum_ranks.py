"""Per-rank half of the two-rank accumulation test through DeepSpeed (spawned processes
import it: light imports only at module level)."""
from __future__ import annotations

import os

import torch

from engine.runs import TinyPairs, experiment

ROWS, MICRO = 8, 2


def whole_batch(cfg, dtype=torch.float64):
    from kgvlp.data.collate import Collator
    from kgvlp.models.text import load_tokenizer
    batch = Collator(load_tokenizer(cfg.model.text), cfg.model.text.max_length)([TinyPairs()[i] for i in range(ROWS)])
    return batch.to(torch.device("cpu"), dtype)


def seeded_model(cfg, dtype=torch.float64):
    from kgvlp.models.vlp import VLPModel
    from kgvlp.objectives import REGISTRY
    torch.manual_seed(0)
    return VLPModel(cfg.model, cfg.objectives, REGISTRY).to(dtype)


def reference(overrides: list[str], dtype=torch.float64) -> dict:
    """One process, no DeepSpeed: loss and gradients of the whole batch."""
    from kgvlp.models.context import StepContext
    cfg = experiment(overrides).config
    model = seeded_model(cfg, dtype)
    loss, _ = model(whole_batch(cfg, dtype), StepContext(step=10, epoch=2.0))
    loss.backward()
    return {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in model.named_parameters()
                                             if p.grad is not None}}


def rank_main(rank: int, world: int, port: int, zero_stage: int, dtype: torch.dtype, overrides: list[str],
              out: str) -> None:
    """This rank's half of the batch as grad_accum micro-batches of MICRO through the
    DeepSpeed backend; the full (reduced) gradient of every parameter before the step."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    from deepspeed.utils import safe_get_full_grad

    from kgvlp.engine.accumulation import accumulate
    from kgvlp.engine.backend import DeepSpeedBackend, init_distributed
    from kgvlp.models.context import StepContext
    device = torch.device("cpu")
    init_distributed(device)
    accum = ROWS // world // MICRO
    cfg = experiment(overrides + [f"trainer.zero_stage={zero_stage}", f"trainer.grad_accum={accum}"]).config
    backend = DeepSpeedBackend(seeded_model(cfg, dtype), cfg.trainer, MICRO, device)
    batch, ctx = whole_batch(cfg, dtype), StepContext(step=10, epoch=2.0)
    start = rank * ROWS // world
    batches = [batch.select(slice(start + i * MICRO, start + (i + 1) * MICRO)) for i in range(accum)]
    loss, _ = accumulate(batches, encode=lambda b: backend.engine(b, ctx, part="samples"),
                         loss_of=lambda f: backend.engine(f, ctx, part="loss"),
                         backward=lambda tensor, last: backend.backward(tensor, boundary=last),
                         module=backend.module, device=device)
    grads = {}
    for name, param in backend.module.named_parameters():
        grad = safe_get_full_grad(param)
        if grad is not None:
            grads[name] = grad.detach().clone()
    total = loss.detach().clone()
    torch.distributed.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / world, "grads": grads}, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
