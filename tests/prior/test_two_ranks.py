"""prior_global on 2 gloo ranks equals one process on the concatenated batch."""
from __future__ import annotations

import pytest
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


def test_prior_global_through_deepspeed_zero2_on_two_ranks_trains_like_one_process(tmp_path):
    """End to end: encoders, gather of the global batch and the learnable logit scale,
    through DeepSpeed ZeRO-2 on 2 gloo ranks (batch 4 each) vs one process (batch 8), in
    float32. The 2-block ViT has no BatchNorm, so nothing but the objective couples rows."""
    from engine.runs import losses, run_ranks, train
    only_prior = ["objectives.ita.weight=0", "objectives.cta.weight=0", "objectives.cpa.weight=0",
                  "objectives.prior_global.weight=1", "trainer.max_steps=3"]
    one = train(str(tmp_path / "one"), only_prior + ["data.batch_size=8"])
    two = run_ranks(2, tmp_path / "two", only_prior + ["data.batch_size=4", "trainer.zero_stage=2"], "full")

    assert sorted(losses(two)) == sorted(losses(one)) == [1, 2, 3]
    for step, value in losses(two).items():
        assert value == pytest.approx(losses(one)[step], abs=1e-5), step
