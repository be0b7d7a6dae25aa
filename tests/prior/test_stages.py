"""Three stages through the Trainer: switch steps, weights and learning rates, exact kill +
resume, the bank through checkpoints, and shapes that do not fit a checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgvlp.config import load_experiment
from kgvlp.data.collate import Sample
from kgvlp.engine.checkpoint import load_model
from kgvlp.engine.trainer import Trainer
from prior.helpers import PRIOR_OBJECTIVES

REPORTS = [["the heart size is normal", "no focal consolidation", "no pleural effusion"],
           ["mild cardiomegaly", "small bilateral pleural effusions"],
           ["lungs are clear", "degenerative changes of the spine", "no pneumothorax", "stable mediastinum"]]
STAGES = ["trainer.stages=[{name: stage1, steps: 1, lr: 1e-3, warmup_ratio: 0.5, "
          "weights: {prior_global: 1, prior_local: 1}}, "
          "{name: stage2, steps: 1, lr: 5e-4, warmup_ratio: 0.5, "
          "weights: {prior_global: 1, prior_local: 1, sentence_prototypes: 10}}, "
          "{name: stage3, steps: 1, lr: 2e-4, warmup_ratio: 0.5, "
          "weights: {prior_global: 10, prior_local: 1, sentence_prototypes: 10, prototype_generation: 10, "
          "masked_reconstruction: 1}}]"]
TINY = ["model.image.name=resnet_test", "model.image.image_size=64", "model.image.resnet_local_layer=layer4",
        "model.image.resnet_global_pool=attention", "model.image.projection_dim=32",
        "model.text.max_length=32", "model.text.num_layers=2", "model.text.dropout=0.0",
        "model.text.projection_dim=32", "model.text.global_pool=sentence_attention",
        "model.services.sentence_bank.size=16",
        "objectives.prior_global.prototype_stages=[stage2,stage3]",
        "objectives.prior_local.prototype_stages=[stage2,stage3]",
        "objectives.prototype_generation.num_layers=1", "objectives.prototype_generation.num_heads=4",
        "objectives.prototype_generation.num_queries=4",
        *[f"objectives.{name}.weight=0" for name in PRIOR_OBJECTIVES],
        "data.num_workers=0", "data.batch_size=4", "trainer.log_every=1", "trainer.progress=false",
        "trainer.min_lr=0", "trainer.checkpoint_every=1", "trainer.max_steps=3", *STAGES]
WEIGHTS = {1: {"prior_global": 1, "prior_local": 1},
           2: {"prior_global": 1, "prior_local": 1, "sentence_prototypes": 10},
           3: {"prior_global": 10, "prior_local": 1, "sentence_prototypes": 10, "prototype_generation": 10,
               "masked_reconstruction": 1}}


class TinyReports(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, index):
        image = torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(index))
        return Sample(image=image, sentences=REPORTS[index % len(REPORTS)], index=index)


def trainer(run_dir: Path, overrides=(), resume=False) -> Trainer:
    experiment = load_experiment(None, TINY + list(overrides))
    return Trainer(experiment, run_dir=None if resume else run_dir, resume=run_dir if resume else None,
                   dataset=TinyReports())


def train_killed_after(run_dir: Path, step: int) -> None:
    run = trainer(run_dir)
    original = run.save_checkpoint

    def save_then_die():
        path = original()
        if run.step == step:
            raise KeyboardInterrupt
        return path
    run.save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        run.train()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    run = trainer(run_dir)
    history = run.train().history
    return run_dir, run, {row["step"]: row for row in history}


def objective_weight(row: dict, name: str) -> float:
    """weighted / Σ raw terms, each raw term × its per-term weight (prototype_generation's)."""
    from kgvlp.objectives import REGISTRY
    cls, cfg = REGISTRY[name], REGISTRY[name].Config()
    term_weight = {term: getattr(cfg, field) for term, field in cls.term_weights.items()}
    raw = sum(v * term_weight.get(k.rsplit("/", 1)[1], 1.0) for k, v in row.items() if k.startswith(f"loss/{name}/"))
    return row[f"weighted/{name}"] / raw


def test_stages_switch_at_their_steps_with_their_weights_and_peak_lrs(full_run):
    _, _, rows = full_run
    peaks = {1: 1e-3, 2: 5e-4, 3: 2e-4}    # 1-step stages: the one warm-up step reaches the peak

    assert sorted(rows) == [1, 2, 3]
    for step, row in rows.items():
        for name in PRIOR_OBJECTIVES:
            if name in WEIGHTS[step]:
                assert objective_weight(row, name) == pytest.approx(WEIGHTS[step][name], rel=1e-4), (step, name)
            else:   # weight 0 in this stage: not computed, only its weighted 0 is logged
                assert row[f"weighted/{name}"] == 0 and not any(k.startswith(f"loss/{name}/") for k in row)
        assert row["lr"] == pytest.approx(peaks[step])


def test_kill_and_resume_across_the_stage_switches_gives_the_same_losses(full_run, tmp_path):
    _, _, rows = full_run
    train_killed_after(tmp_path / "killed", 1)
    resumed = {row["step"]: row for row in trainer(tmp_path / "killed", resume=True).train().history}

    assert sorted(resumed) == [2, 3]
    for step, row in resumed.items():
        for key, value in row.items():
            if key.startswith("loss/"):
                assert value == pytest.approx(rows[step][key], abs=1e-5), (step, key)


def test_the_bank_and_its_usage_round_trip_through_checkpoints(full_run):
    run_dir, run, _ = full_run
    bank = run.model.services["sentence_bank"]

    loaded = load_model(run_dir)[0].services["sentence_bank"]
    resumed_trainer = trainer(run_dir, resume=True)
    resumed = resumed_trainer.model.services["sentence_bank"]
    resumed_trainer.close()

    for other in (loaded, resumed):
        torch.testing.assert_close(other.prototypes.weight, bank.prototypes.weight, atol=0, rtol=0)
        torch.testing.assert_close(other.usage, bank.usage, atol=0, rtol=0)
        assert torch.equal(other.idle_steps, bank.idle_steps)
    assert bank.usage.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("override,shapes", [
    ("model.services.sentence_bank.size=8", ("(16, 32)", "(8, 32)")),
    ("objectives.prototype_generation.num_queries=6", ("(1, 4, 32)", "(1, 6, 32)")),
])
def test_a_bank_size_or_query_count_that_does_not_fit_fails_naming_both_shapes(full_run, override, shapes):
    run_dir, _, _ = full_run

    with pytest.raises(ValueError) as error:
        load_model(run_dir, [override])

    assert all(shape in str(error.value) for shape in shapes)


def test_resuming_with_another_bank_size_fails_naming_both_shapes(full_run):
    run_dir, _, _ = full_run

    with pytest.raises(Exception) as error:
        trainer(run_dir, ["model.services.sentence_bank.size=8"], resume=True)

    assert "(16, 32)" in str(error.value) and "(8, 32)" in str(error.value)


def test_a_staged_runs_baselines_have_its_objectives_services_and_widths():
    from kgvlp.eval.loading import baselines
    from kgvlp.models.build import build_model
    cfg = load_experiment(None, TINY).config          # every objective weight 0: the stages enable them
    trained = build_model(cfg)

    for candidate in baselines(trained):
        assert list(candidate.model.objectives.objectives) == list(trained.objectives.objectives), candidate.name
        assert list(candidate.model.services) == list(trained.services) == ["sentence_bank"]
        assert candidate.model.dims == trained.dims
        assert {k: v.shape for k, v in candidate.model.state_dict().items()} == \
            {k: v.shape for k, v in trained.state_dict().items()}
    assert sorted(trained.objectives.objectives) == sorted(PRIOR_OBJECTIVES)
