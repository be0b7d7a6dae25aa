"""The sync counter counts each kind of call that would make the host wait for a GPU, and
none of the device-side operations a step is made of."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kgvlp.modules.assignment import linear_sum_assignment
from kgvlp.objectives.prototype_generation import hungarian
from kgvlp.perf.syncs import count_syncs


def kinds(counts) -> list[str]:
    return [kind for kind, _ in counts.events]


def test_each_host_read_is_one_event():
    x = torch.randn(4)

    with count_syncs() as counts:
        x.sum().item()
        bool(x.sum() > 0)
        x.tolist()
        x.cpu()
        x.to("cpu")
        x.numpy()
        int(x[0])

    assert kinds(counts) == [".item()", ".__bool__()", ".tolist()", "copy to host", "copy to host",
                             ".numpy()", ".__int__()"]


def test_data_dependent_shapes_are_events_forward_and_backward():
    x = torch.randn(6, requires_grad=True)
    mask = x.detach() > 0

    with count_syncs() as counts:
        picked = x[mask]
        torch.bincount(mask.long())
        torch.nonzero(mask)
        torch.unique(mask)
        picked.sum().backward()

    assert kinds(counts) == ["index with a boolean mask", "bincount", "nonzero", "_unique2",
                             "index_put with a boolean mask"]


def test_a_host_tensor_built_in_the_step_and_moved_to_the_device_is_an_event():
    device_tensor = torch.randn(3)

    with count_syncs() as counts:
        labels = torch.cat([torch.ones(3), torch.zeros(6)]).long().to(device_tensor.device)
        torch.zeros(3, device=device_tensor.device).to(device_tensor.device)   # device → same device
        seeded = torch.Generator().manual_seed(3)
        torch.randint(4, (2,), generator=seeded).tolist()                      # host only: no device

    assert kinds(counts) == ["host tensor copied to the device"]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_device_side_work_is_not_counted():
    x, index = torch.randn(4, 5), torch.tensor([0, 2, 2, 1])

    with count_syncs() as counts:
        torch.where(x > 0, x, 0.0).gather(1, index[:, None])
        x.new_zeros(5).scatter_add_(0, index, x[:, 0])
        x[index]                                        # long indices: no size to wait for
        F.one_hot(index, 5)                             # the CPU kernel's checks only
        linear_sum_assignment(x[None])

    assert counts.total == 0, counts.report()


def test_cuda_synchronize_is_counted():
    with count_syncs() as counts:
        try:
            torch.cuda.synchronize()
        except (RuntimeError, AssertionError):           # no CUDA device here
            pass

    assert kinds(counts) == ["torch.cuda.synchronize"]


def test_events_name_the_kgvlp_line_that_made_them():
    with count_syncs() as counts:   # host arrays in and out: moved to the solver's device and back
        hungarian(np.random.default_rng(0).random((1, 3, 3)), np.ones((1, 3), bool))

    sites = dict((kind, where) for kind, where in counts.events)
    assert sites[".numpy()"].startswith("kgvlp/objectives/prototype_generation.py:")
    assert sites["host tensor copied to the device"].startswith("kgvlp/modules/assignment.py:")
    assert counts.report().startswith("2 host syncs")
