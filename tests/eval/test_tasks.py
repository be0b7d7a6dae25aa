"""Smoke tests: every task runs end to end on a tiny model and dataset, with both baselines,
and writes its JSON, Markdown and plots."""
import json

import pytest
import torch

from eval_fixtures import make_tiny_model
from kgvlp.eval import DetConfig, ProbeConfig, SegConfig, evaluate
from kgvlp.eval.linear_probe import train_probe


@pytest.fixture(scope="module")
def full_run(tiny_model, tiny_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    results = evaluate(tiny_model, tiny_splits, suite="full", out_dir=out, fractions=[1.0], seeds=[0],
                       device="cpu", progress=False, probe=ProbeConfig(max_epochs=3),
                       seg=SegConfig(epochs=1, batch_size=8), det=DetConfig(epochs=1, batch_size=8),
                       data_name="tiny")
    return {r.task: r for r in results}, out


@pytest.mark.parametrize("task", ["linear_probe", "zero_shot", "retrieval", "grounding", "segmentation", "detection"])
def test_task_reports_every_model_with_metric_in_range(full_run, task):
    results, out = full_run
    result = results[task]
    assert result.skipped is None
    assert {row["model"] for row in result.rows} == {"trained", "random", "start"}
    values = [row[result.metric] for row in result.rows]
    assert all(0.0 <= v <= 1.0 for v in values), values
    payload = json.loads((out / f"{task}.json").read_text())
    assert payload["summary"]["trained"]
    assert (out / f"{task}.md").read_text().startswith(f"### {task} — tiny")


@pytest.fixture(scope="module")
def probe_run(tiny_model, tiny_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    [result] = evaluate(tiny_model, tiny_splits, tasks=["linear_probe"], out_dir=out, fractions=[0.5, 1.0],
                        seeds=[0, 1], baselines=False, device="cpu", progress=False,
                        probe=ProbeConfig(max_epochs=3), data_name="tiny")
    return result, out


def test_fraction_tasks_run_every_fraction_and_seed(probe_run):
    rows = probe_run[0].rows
    assert sorted((r["fraction"], r["seed"]) for r in rows) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    assert all(r["train_size"] == 12 for r in rows if r["fraction"] == 0.5)


def test_markdown_table_has_models_and_fractions(probe_run, full_run):
    assert "| model | auroc @ 50% | auroc @ 100% |" in (probe_run[1] / "linear_probe.md").read_text()
    table = (full_run[1] / "linear_probe.md").read_text()
    assert "| trained |" in table and "| random |" in table and "| start |" in table


def test_plots_are_written(full_run):
    out = full_run[1]
    for name in ("attention_trained.png", "tsne_trained.png", "tsne_random.png"):
        assert (out / name).stat().st_size > 1000
    assert "linear_probe" in (out / "summary.md").read_text()


def test_grounding_reports_chance_and_mention_count(full_run):
    row = next(r for r in full_run[0]["grounding"].rows if r["model"] == "trained")
    assert 0 < row["chance"] < 1
    assert row["mentions"] > 0   # only present findings are pointed at, negated ones are not


def test_evaluation_leaves_the_model_unchanged(tiny_model, tiny_splits, tmp_path):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    evaluate(tiny_model, tiny_splits, tasks=["segmentation"], out_dir=tmp_path, fractions=[1.0], seeds=[0],
             baselines=False, device="cpu", progress=False, seg=SegConfig(epochs=1, finetune=True))
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tasks_without_a_shared_space_are_skipped_with_a_reason(tiny_splits, tmp_path):
    model = make_tiny_model(objectives=("cta",))
    [zero_shot, grounding] = evaluate(model, tiny_splits, tasks=["zero_shot", "grounding"], out_dir=tmp_path,
                                      baselines=False, device="cpu", progress=False)
    assert "projections" in zero_shot.skipped
    assert grounding.skipped is None


def test_resnet_segmentation_uses_unet(tiny_splits, tmp_path):
    model = make_tiny_model(image="resnet_test")
    [result] = evaluate(model, tiny_splits, tasks=["segmentation"], out_dir=tmp_path, fractions=[1.0], seeds=[0],
                        baselines=False, device="cpu", progress=False, seg=SegConfig(epochs=1, batch_size=8))
    assert 0.0 <= result.rows[0]["dice"] <= 1.0


def test_probe_early_stopping_keeps_best_validation_epoch():
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), (torch.rand(40, 2) < 0.5).float()   # labels unrelated to x: val loss rises
    _, info = train_probe(x[:30], y[:30], x[30:], y[30:], multiclass=False, seed=0,
                          cfg=ProbeConfig(max_epochs=200, patience=3, lr=0.1))
    assert info["epochs"] < 200
    assert info["epochs"] == info["best_epoch"] + 3


def test_one_hot_labels_are_scored_as_multiclass_accuracy(tiny_model, tmp_path):
    from eval_fixtures import TinyFindings

    class OneHot(TinyFindings):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            one_hot = torch.zeros(3)
            one_hot[index % 3] = 1.0
            return {"image": item.image, "labels": one_hot}

    splits = {"train": OneHot(12, 1), "val": OneHot(6, 2), "test": OneHot(9, 3)}
    [result] = evaluate(tiny_model, splits, tasks=["linear_probe"], out_dir=tmp_path, fractions=[1.0], seeds=[0],
                        baselines=False, device="cpu", progress=False, probe=ProbeConfig(max_epochs=2))
    assert result.metric == "accuracy"
    assert result.rows[0]["accuracy"] * 9 == pytest.approx(round(result.rows[0]["accuracy"] * 9))
