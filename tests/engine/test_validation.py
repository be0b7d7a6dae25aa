"""Validation loss and early stopping (MGCA's code: val_loss each epoch, patience 5): it
is logged, it does not change what training computes, the best weights are kept, and
early stopping ends the run after ``patience`` validations without improvement, also
across a kill and resume."""
from __future__ import annotations

import json

from engine.runs import losses, train

STEPS = ["trainer.max_steps=6", "trainer.checkpoint_every=2", "data.batch_size=4"]
# TinyPairs: 32 pairs at batch 4 = 8 steps per epoch, so every_epochs 0.125 = every step
VALIDATE = ["trainer.validation.split=val", "trainer.validation.every_epochs=0.125"]


def _validations(run_dir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["val_loss"]) for row in rows if "val_loss" in row]


def test_validation_is_logged_each_time_it_is_due_and_leaves_training_unchanged(tmp_path):
    plain = train(str(tmp_path / "plain"), STEPS)
    validated = train(str(tmp_path / "validated"), STEPS + VALIDATE)

    assert losses(validated) == losses(plain)                 # exactly: the RNG state is restored
    validations = _validations(tmp_path / "validated")
    assert [step for step, _ in validations] == [1, 2, 3, 4, 5, 6]
    assert all(0 < value < 100 for _, value in validations)
    assert (tmp_path / "validated" / "best" / "model.safetensors").is_file()
    assert not (tmp_path / "plain" / "best").exists()


def test_early_stopping_ends_the_run_after_patience_validations_without_improvement(tmp_path):
    # min_delta so large that only the first validation counts as an improvement
    stopping = VALIDATE + ["trainer.validation.patience=2", "trainer.validation.min_delta=1e9"]
    full = train(str(tmp_path / "full"), STEPS + stopping)
    train(str(tmp_path / "killed"), STEPS + stopping, stop_at=2)
    resumed = train(str(tmp_path / "killed"), STEPS + stopping, resume=True)

    assert max(losses(full)) == 3                             # validations at 1 (best), 2, 3: stop
    assert sorted(losses(resumed)) == [3]                     # the waiting count survived the kill
    assert [step for step, _ in _validations(tmp_path / "killed")] == [1, 2, 3]
    from safetensors import safe_open
    with safe_open(str(tmp_path / "full" / "best" / "model.safetensors"), "pt") as weights:
        assert weights.metadata()["step"] == "1"
