"""The learning rate is a pure function of the step: warm-up then cosine, restarted inside
each stage with the stage's peak and warm-up (PRIOR). The Trainer-level stage test checks
the logged lr at each switch; this one checks every step of the shape."""
from __future__ import annotations

import math

import pytest

from kgvlp.config.schema import StageConfig
from kgvlp.engine.schedule import lr_at, resolve_stages


def test_without_stages_linear_warm_up_then_cosine_to_the_floor():
    lrs = [lr_at(step, 10, 1e-3, 1e-5, 0.2, []) for step in range(10)]

    assert lrs[:2] == pytest.approx([1e-5 + (1e-3 - 1e-5) * k / 2 for k in (1, 2)])
    cosine = [1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert lrs[2:] == pytest.approx(cosine)


def test_each_stage_restarts_warm_up_and_cosine_at_its_own_peak():
    stages = resolve_stages([StageConfig(name="a", steps=4, lr=1e-3, warmup_ratio=0.5),
                             StageConfig(name="b", steps=4, lr=5e-4, warmup_ratio=0.25)], steps_per_epoch=1)
    lrs = [lr_at(step, 8, 9.9, 0.0, 0.1, stages) for step in range(9)]

    # a: warm-up 2 steps to 1e-3, then the cosine starts at the peak (its second half-step)
    assert lrs[:4] == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])
    # b: its own 1-step warm-up to 5e-4, then cosine over the remaining 3 steps
    assert lrs[4:8] == pytest.approx([5e-4, 5e-4, 5e-4 * 0.75, 5e-4 * 0.25])
    # after the last stage the last stage's schedule continues (its cosine has ended)
    assert lrs[8] == pytest.approx(0.0, abs=1e-12)


# The official codes sample the warm-up line differently from kgvlp (W = 4 warm-up steps of
# 10, start a = 1e-6, peak 1e-3, floor 0): MGCA's CosineAnnealingWarmupRestarts runs its
# first step at a and reaches the peak one step after the warm-up; PRIOR's pl_bolts
# LinearWarmupCosineAnnealingLR runs its first step at a and reaches the peak at the warm-up's
# last step. After the warm-up all three follow the same cosine.
@pytest.mark.parametrize("formula, warm_up", [
    ("kgvlp", [1e-6 + (1e-3 - 1e-6) * k / 4 for k in (1, 2, 3, 4)]),
    ("cosine_annealing_warmup", [1e-6 + (1e-3 - 1e-6) * k / 4 for k in (0, 1, 2, 3)]),
    ("pl_bolts", [1e-6 + (1e-3 - 1e-6) * k / 3 for k in (0, 1, 2, 3)]),
])
def test_the_warm_up_formula_follows_each_official_scheduler(formula, warm_up):
    lrs = [lr_at(step, 10, 1e-3, 0.0, 0.4, [], warmup_start_lr=1e-6, warmup_formula=formula)
           for step in range(10)]

    assert lrs[:4] == pytest.approx(warm_up, rel=1e-12)
    assert lrs[4:] == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)], rel=1e-12)


def test_a_stage_has_its_own_warm_up_start_and_without_one_the_floor_is_the_start():
    stages = resolve_stages([StageConfig(name="a", steps=4, lr=1e-3, warmup_ratio=0.5, warmup_start_lr=1e-7),
                             StageConfig(name="b", steps=4, lr=5e-4, warmup_ratio=0.5)], steps_per_epoch=1)
    lrs = [lr_at(step, 8, 9.9, 1e-8, 0.1, stages, warmup_formula="pl_bolts") for step in range(8)]

    assert lrs[0] == 1e-7 and lrs[1] == pytest.approx(1e-3)
    assert lrs[4] == 1e-8 and lrs[5] == pytest.approx(5e-4)


def test_an_optimizer_reset_is_due_only_at_the_first_step_of_a_resetting_stage():
    from kgvlp.config.schema import ExperimentConfig, TrainerConfig
    from kgvlp.engine.schedule import Schedule
    config = ExperimentConfig(trainer=TrainerConfig(stages=[
        StageConfig(name="a", steps=3), StageConfig(name="b", steps=3, reset_optimizer=True),
        StageConfig(name="c", steps=3)]))
    schedule = Schedule.from_config(config, steps_per_epoch=3)

    assert [step for step in range(9) if schedule.resets_optimizer(step)] == [3]
