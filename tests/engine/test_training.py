"""The engine: exact resume, multi-rank equivalence, atomic checkpoints, bad losses."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from kgvlp.engine.trainer import NonFiniteLoss
from engine.runs import TinyPairs, losses, run_ranks, train
from two_ranks import free_port

STEPS = ["trainer.max_steps=6", "trainer.checkpoint_every=3", "data.batch_size=4"]


def test_kill_and_resume_gives_the_same_losses_zero0(tmp_path):
    uninterrupted = train(str(tmp_path / "full"), STEPS)
    train(str(tmp_path / "killed"), STEPS, stop_at=3)
    resumed = train(str(tmp_path / "killed"), STEPS, resume=True)

    assert sorted(losses(resumed)) == [4, 5, 6]
    for step, value in losses(resumed).items():
        assert value == pytest.approx(losses(uninterrupted)[step], abs=1e-6)


def test_checkpoints_are_atomic_and_load_with_weights_only(tmp_path):
    train(str(tmp_path / "run"), STEPS)
    checkpoints = tmp_path / "run" / "checkpoints"

    assert (checkpoints / "latest").read_text() == "step_0000006"
    assert not list(checkpoints.glob("*.tmp"))
    for file in (checkpoints / "step_0000006").glob("*.pt"):
        from kgvlp.engine.backend import _allow_deepspeed_checkpoint_types
        _allow_deepspeed_checkpoint_types()
        torch.load(file, map_location="cpu", weights_only=True)   # raises on any pickled object
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_objective_state_survives_the_checkpoint(tmp_path):
    """CPA's prototypes (normalised in after_step) and BN statistics are restored exactly."""
    from kgvlp.engine.checkpoint import load_model
    train(str(tmp_path / "run"), STEPS)
    model, _ = load_model(tmp_path / "run")
    prototypes = model.objectives.objectives["cpa"].prototypes.weight

    assert torch.allclose(prototypes.norm(dim=1), torch.ones(8), atol=1e-5)
    assert int(model.projections.image.net[1].num_batches_tracked) == 6


def test_a_nan_loss_stops_training_naming_step_objective_and_checkpoint(tmp_path):
    # Sample 13 lands in the 4th global batch of epoch 0's permutation or later; find it.
    with pytest.raises(NonFiniteLoss) as error:
        train(str(tmp_path / "run"), STEPS + ["trainer.max_steps=16"], dataset=TinyPairs(nan_at=13))
    message = str(error.value)
    assert "non-finite loss at step" in message
    assert "objective 'ita'" in message or "objective 'cta'" in message or "objective 'cpa'" in message
    assert "last good checkpoint" in message


def test_two_ranks_zero2_train_like_one_process_on_the_concatenated_batch(tmp_path):
    """End to end through DeepSpeed ZeRO-2 in float32: the first step's loss (global
    negatives, global Sinkhorn, synchronised BatchNorm) equals one process's to 1e-4, later
    steps to 1e-2. Float32 is the limit, not the method: the heads' BatchNorm divides by the
    small spread of similar report vectors, and Adam turns rounding in near-zero gradients
    (biases before a BatchNorm) into ±lr steps. The float64 test below is the exact check."""
    one = train(str(tmp_path / "one"), ["trainer.max_steps=3", "data.batch_size=8"])
    two = run_ranks(2, tmp_path / "two", ["trainer.max_steps=3", "data.batch_size=4",
                                          "trainer.zero_stage=2"], "full")
    assert losses(two)[1] == pytest.approx(losses(one)[1], abs=1e-4)
    for step, value in losses(two).items():
        assert value == pytest.approx(losses(one)[step], abs=1e-2), step


def test_kill_and_resume_on_two_ranks_zero2(tmp_path):
    overrides = STEPS + ["trainer.zero_stage=2"]
    uninterrupted = run_ranks(2, tmp_path / "full", overrides, "full")
    run_ranks(2, tmp_path / "killed", overrides, "killed:3")
    resumed = run_ranks(2, tmp_path / "killed", overrides, "resume")

    assert sorted(losses(resumed)) == [4, 5, 6]
    for step, value in losses(resumed).items():
        assert value == pytest.approx(losses(uninterrupted)[step], abs=1e-6)


@pytest.mark.parametrize("objective", ["ita", "cpa"])
def test_two_ranks_give_the_gradients_of_one_process_on_the_concatenated_batch(tmp_path, objective):
    """Loss and every parameter's data-parallel gradient through the whole model (global
    negatives, global Sinkhorn, synchronised BatchNorm in the heads) match to 1e-5."""
    from engine.runs import gradient_rank_main
    overrides = [f"objectives.{o}.weight=0" for o in ("ita", "cta", "cpa") if o != objective]
    results = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}.pt"
        mp.start_processes(gradient_rank_main, args=(world, free_port(), overrides, str(out)),
                           nprocs=world, join=True, start_method="spawn")
        results[world] = torch.load(out, weights_only=True)

    assert torch.allclose(results[1]["loss"], results[2]["loss"], atol=1e-10)
    assert results[1]["grads"].keys() == results[2]["grads"].keys()
    for name, grad in results[1]["grads"].items():
        assert torch.allclose(grad, results[2]["grads"][name], atol=1e-5), name


def _adam_step_counts(trainer) -> set[int]:
    return {int(state["step"]) for state in trainer.backend.adamw.state.values()}


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_a_stage_with_reset_optimizer_starts_from_a_fresh_adam_state_and_resumes_so(tmp_path, zero_stage):
    """PRIOR's code builds a new optimizer per stage: Adam's step count and moments restart.
    Killed right after the last step before the reset, the resumed run resets too."""
    from pathlib import Path

    from engine.runs import experiment
    from kgvlp.engine.trainer import Trainer
    weights = "weights: {ita: 1, cta: 1, cpa: 1}"
    stages = ("trainer.stages=[{name: a, steps: 3, %s}, {name: b, steps: 3, %s, reset_optimizer: %%s}]"
              % (weights, weights))
    common = ["trainer.max_steps=6", "trainer.checkpoint_every=3", "data.batch_size=4",
              f"trainer.zero_stage={zero_stage}"]
    counts = {}
    for reset in ("false", "true"):
        trainer = Trainer(experiment(common + [stages % reset]), run_dir=tmp_path / reset, dataset=TinyPairs())
        trainer.train()
        counts[reset] = _adam_step_counts(trainer)
    train(str(tmp_path / "killed"), common + [stages % "true"], stop_at=3)
    resumed = Trainer(experiment(common + [stages % "true"]), resume=Path(tmp_path / "killed"), dataset=TinyPairs())
    resumed.train()

    assert counts == {"false": {6}, "true": {3}}
    assert _adam_step_counts(resumed) == {3}
