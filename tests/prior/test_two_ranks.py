"""prior_global on 2 gloo ranks equals one process on the concatenated batch."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp

from prior import two_ranks_prior
from two_ranks import free_port


def test_prior_global_on_two_ranks_equals_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(two_ranks_prior.worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    expected = two_ranks_prior.loss_and_grads(*two_ranks_prior.vectors())

    for rank, got in enumerate(per_rank):
        rows = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(got["loss"], expected["loss"], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["image_grad"], expected["image_grad"][rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["text_grad"], expected["text_grad"][rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["scale_grad"], expected["scale_grad"], atol=1e-5, rtol=0)
