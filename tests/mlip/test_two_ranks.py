"""mlip_global and the divergence queue on 2 gloo ranks equal one process on the
concatenated batch (losses, gradients and queue contents, over two steps)."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp

import two_ranks
from mlip import two_ranks_mlip


def test_mlip_global_and_queue_on_two_ranks_equal_one_process(tmp_path):
    mp.spawn(two_ranks_mlip.worker, args=(two_ranks.free_port(), str(tmp_path)), nprocs=2, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    expected, expected_queue = two_ranks_mlip.run_steps(slice(None), world=1)

    for rank, (steps, queue) in enumerate(per_rank):
        rows = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(queue, expected_queue, rtol=0, atol=1e-12)
        for (loss, image_grad, text_grad), (ref_loss, ref_image, ref_text) in zip(steps, expected):
            torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
            torch.testing.assert_close(image_grad, ref_image[rows], rtol=0, atol=1e-10)
            torch.testing.assert_close(text_grad, ref_text[rows], rtol=0, atol=1e-10)
