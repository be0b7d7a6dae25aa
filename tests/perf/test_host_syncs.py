"""No host syncs in a training step: one forward + backward + after_step of each shipped
objective stack (MGCA demo, MLIP demo, PRIOR demo in stage 3), at tiny sizes on the CPU,
makes none of the calls that would make the host wait for a GPU (kgvlp/perf/syncs.py).
Logging is outside the step: the trainer reads the logged values once per log window."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from kgvlp.config import load_experiment
from kgvlp.engine.schedule import Schedule
from kgvlp.models.build import build_model
from kgvlp.perf.syncs import count_syncs
from kgvlp_tiny import make_batch
from mlip import helpers as mlip

TINY_TEXT = ["model.text.path=null", "model.text.num_layers=2", "model.text.max_length=32"]
TINY = {
    "demo": ["model.image.name=vit_test", "model.image.image_size=64", *TINY_TEXT,
             "objectives.cta.hidden_dim=32", "objectives.cpa.num_prototypes=8"],
    "mlip_demo": ["model.image.name=vit_test", "model.image.image_size=64", *TINY_TEXT,
                  "objectives.cta.hidden_dim=32", "objectives.cpa.num_prototypes=8",
                  "model.services.knowledge_bank.num_categories=3", "model.services.divergence.queue_size=16"],
    # MGCA with every official quirk (its word slots service, per-GPU heads, float32 codes)
    "demo_quirks": ["model.image.name=vit_test", "model.image.image_size=64", *TINY_TEXT,
                    "objectives.cta.hidden_dim=32", "objectives.cpa.num_prototypes=8", "model.sync_batchnorm=false",
                    *(f"objectives.{n}.official_quirks=true" for n in ("ita", "cta", "cpa"))],
    "prior_demo": ["model.image.image_size=64", "model.image.projection_dim=32", "model.text.projection_dim=32",
                   *TINY_TEXT, "model.services.sentence_bank.size=8"],
}


def stack(name: str, bank_dir=None, stage_index: int = -1, epoch: float | None = None):
    overrides = list(TINY[name])
    if name == "mlip_demo":
        overrides += [f"data.knowledge_embeddings={bank_dir / 'embeddings'}",
                      f"data.knowledge_graph={bank_dir / 'graph.json'}"]
    cfg = load_experiment(f"configs/experiments/{name.removesuffix('_quirks')}.yaml", overrides).config
    schedule = Schedule.from_config(cfg, steps_per_epoch=10)
    torch.manual_seed(0)
    model = build_model(cfg)
    stages = schedule.stages
    step = stages[stage_index].start + 1 if stages else 20   # MGCA: after CPA's frozen first epoch
    ctx = schedule.at(step)                                  # the stage's weights, as in training
    return model, dataclasses.replace(ctx, epoch=ctx.epoch if epoch is None else epoch, max_steps=step + 10)


def one_step(model, batch, ctx):
    loss, _ = model(batch, ctx)
    loss.backward()
    model.after_step(ctx)


@pytest.fixture
def mlip_bank(tmp_path):
    mlip.write_bank(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name, stage_index, epoch", [
    ("demo", -1, None), ("demo", -1, 0.5),                    # CPA's prototypes unfrozen, frozen
    ("demo_quirks", -1, None),
    ("mlip_demo", -1, None),
    ("prior_demo", 2, None), ("prior_demo", 0, None), ("prior_demo", 1, None)])   # stage 3, 1, 2
def test_a_training_step_makes_no_host_sync(name, stage_index, epoch, tokenizer, reports, mlip_bank):
    model, ctx = stack(name, mlip_bank, stage_index, epoch)
    batch = mlip.make_batch(tokenizer) if name == "mlip_demo" else make_batch(tokenizer, reports, size=4)
    one_step(model, batch, ctx)                          # first step: lazy initialisation

    with count_syncs() as counts:
        one_step(model, batch, ctx)

    assert counts.total == 0, counts.report()
