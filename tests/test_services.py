"""Shared services objectives build on: the EMA (divergence) copy and the feature queue."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kgvlp.modules.ema import EMAModule, momentum_at
from kgvlp.modules.queue import FeatureQueue


def small_network(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


# ---------------------------------------------------------------------------------------
# EMAModule


def test_ema_update_is_momentum_times_shadow_plus_one_minus_momentum_times_online():
    online = small_network()
    ema = EMAModule(online)
    before = {name: value.clone() for name, value in ema.shadow.named_buffers()}
    with torch.no_grad():
        for param in online.parameters():
            param.add_(torch.randn_like(param))

    ema.update(online, momentum=0.9)

    for name, param in online.named_parameters():
        torch.testing.assert_close(ema.shadow.get_buffer(name), 0.9 * before[name] + 0.1 * param.detach())


def test_ema_copies_batchnorm_statistics_instead_of_averaging_them():
    online = small_network()
    ema = EMAModule(online)
    online.train()(torch.randn(8, 4))   # moves running_mean / running_var

    ema.update(online, momentum=0.9)

    torch.testing.assert_close(ema.shadow.get_buffer("1.running_mean"), online.get_buffer("1.running_mean"))


def test_ema_module_has_no_parameters_only_buffers():
    ema = EMAModule(small_network())

    assert list(ema.parameters()) == []
    assert {name.removeprefix("shadow.") for name, _ in ema.named_buffers()} >= {
        name for name, _ in small_network().named_parameters()}


def test_ema_forward_gives_no_gradient():
    ema = EMAModule(small_network()).eval()

    out = ema(torch.randn(2, 4, requires_grad=True))

    assert not out.requires_grad


def test_ema_state_round_trips_through_state_dict():
    online = small_network()
    ema = EMAModule(online)
    with torch.no_grad():
        for param in online.parameters():
            param.mul_(3.0)
    ema.update(online, momentum=0.5)

    restored = EMAModule(small_network(seed=1))
    restored.load_state_dict(ema.state_dict())

    for (name, value), (_, other) in zip(ema.state_dict().items(), restored.state_dict().items()):
        torch.testing.assert_close(other, value, msg=name)


@pytest.mark.parametrize("step, expected", [(0, 0.996), (50, (0.996 + 1.0) / 2), (100, 1.0), (250, 1.0)])
def test_momentum_schedule_goes_from_start_to_end_along_a_cosine(step, expected):
    assert momentum_at(step, max_steps=100, start=0.996) == pytest.approx(expected)


def test_momentum_schedule_quarter_point_follows_the_cosine_formula():
    expected = 1.0 - (1.0 - 0.9) * (math.cos(math.pi * 0.25) + 1) / 2

    assert momentum_at(25, max_steps=100, start=0.9) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------
# FeatureQueue


def rows(*values: float) -> torch.Tensor:
    """One 2-d feature row per value: (value, 0)."""
    return torch.tensor([[v, 0.0] for v in values])


def filled(queue) -> torch.Tensor:
    return queue.features[: int(queue.filled)]


def test_queue_writes_oldest_first_and_reports_only_the_filled_part():
    queue = FeatureQueue(size=5, dim=2, normalise=False)

    queue.stage(rows(1, 2))
    queue.commit()
    queue.stage(rows(3))
    queue.commit()

    torch.testing.assert_close(filled(queue), rows(1, 2, 3))
    assert int(queue.pointer) == 3 and int(queue.filled) == 3


def test_queue_pointer_wraps_and_overwrites_the_oldest_entries():
    queue = FeatureQueue(size=4, dim=2, normalise=False)
    for chunk in (rows(1, 2, 3), rows(4, 5, 6)):
        queue.stage(chunk)
        queue.commit()

    torch.testing.assert_close(queue.features, rows(5, 6, 3, 4))  # ring order: 3 4 5 6 from pointer
    assert int(queue.pointer) == 2 and int(queue.filled) == 4


def test_queue_write_larger_than_the_queue_keeps_the_newest_rows():
    queue = FeatureQueue(size=3, dim=2, normalise=False)

    queue.stage(rows(1, 2, 3, 4, 5))
    queue.commit()

    assert sorted(queue.features[:, 0].tolist()) == [3.0, 4.0, 5.0]


def test_queue_normalises_written_features_by_default():
    queue = FeatureQueue(size=2, dim=2)

    queue.stage(torch.tensor([[3.0, 4.0]]))
    queue.commit()

    torch.testing.assert_close(filled(queue), torch.tensor([[0.6, 0.8]]))


def test_queue_changes_only_on_commit_not_on_stage():
    queue = FeatureQueue(size=3, dim=2, normalise=False)

    queue.stage(rows(1))

    assert int(queue.filled) == 0 and filled(queue).shape == (0, 2)


def test_queue_state_round_trips_through_state_dict():
    queue = FeatureQueue(size=4, dim=2, normalise=False)
    queue.stage(rows(1, 2, 3, 4, 5, 6)[:3])
    queue.commit()

    restored = FeatureQueue(size=4, dim=2, normalise=False)
    restored.load_state_dict(queue.state_dict())

    torch.testing.assert_close(restored.features, queue.features)
    assert int(restored.pointer) == 3 and int(restored.filled) == 3
    restored.stage(rows(7, 8))
    restored.commit()
    torch.testing.assert_close(restored.features, rows(8, 2, 3, 7))
