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
