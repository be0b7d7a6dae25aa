"""An objective whose weight is 0 in the current stage is not computed in training: a
PRIOR stage-1 step runs only prior_global and prior_local (and the services they read),
gives the skipped objectives' parameters zero gradients as the computed × 0 terms did, and
costs fewer FLOPs than a stage-3 step. Without a schedule (tests, feature extraction) every
objective still runs."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kgvlp.config import load_experiment
from kgvlp.engine.schedule import Schedule
from kgvlp.models.build import build_model
from kgvlp_tiny import make_batch

from perf.test_host_syncs import TINY

STAGE3_ONLY = ("sentence_prototypes", "masked_reconstruction", "prototype_generation")


def prior_demo():
    cfg = load_experiment("configs/experiments/prior_demo.yaml", TINY["prior_demo"]).config
    torch.manual_seed(0)
    return build_model(cfg), Schedule.from_config(cfg, steps_per_epoch=10)


def calls(model) -> dict[str, int]:
    """Counts of each objective's forward calls, kept up to date by hooks."""
    counted = {name: 0 for name in model.objectives.objectives}
    for name, objective in model.objectives.objectives.items():
        objective.register_forward_hook(lambda *_, name=name: counted.__setitem__(name, counted[name] + 1))
    return counted


def test_a_stage_one_step_computes_only_the_stage_one_objectives(tokenizer, reports):
    model, schedule = prior_demo()
    counted = calls(model)
    ctx = schedule.at(schedule.stages[0].start + 1)

    loss, logs = model(make_batch(tokenizer, reports), ctx)
    loss.backward()

    assert counted == {"prior_global": 1, "prior_local": 1, **{name: 0 for name in STAGE3_ONLY}}
    assert loss.item() == pytest.approx(sum(logs[f"weighted/{n}"].item() for n in ("prior_global", "prior_local")))
    for name in STAGE3_ONLY:
        assert logs[f"weighted/{name}"] == 0 and not any(k.startswith(f"loss/{name}/") for k in logs)
        grads = [p.grad for p in model.objectives.objectives[name].parameters()]
        assert all(g is not None and not g.any() for g in grads), name       # zeros, not None


def test_without_a_schedule_every_objective_runs(tokenizer, reports):
    model, schedule = prior_demo()
    counted = calls(model)

    model(make_batch(tokenizer, reports), dataclasses.replace(schedule.at(1), weights=None))

    assert set(counted.values()) == {1}


def step_flops(model, batch, ctx) -> int:
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch, ctx)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def test_a_stage_one_step_costs_fewer_flops_than_computing_everything(tokenizer, reports):
    # At these tiny sizes the encoders dominate (the saving is 18% at prior_demo's sizes,
    # docs/prior.md); the decoders' FLOPs must still be gone, not merely multiplied by 0.
    model, schedule = prior_demo()
    batch = make_batch(tokenizer, reports)
    first, last = (schedule.at(stage.start + 1) for stage in (schedule.stages[0], schedule.stages[-1]))

    stage1, stage3 = step_flops(model, batch, first), step_flops(model, batch, last)
    everything = step_flops(model, batch, dataclasses.replace(first, weights=None))   # all run, × 0

    assert stage1 < stage3 and stage1 < everything, (stage1, stage3, everything)
