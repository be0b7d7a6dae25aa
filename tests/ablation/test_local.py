"""The local executor on a tiny grid of three runs, two at a time: one trains normally,
one is killed (SIGKILL) right after its step-2 checkpoint, one fails at start-up. Then
re-running the grid skips, resumes and (with --retry-failed) retries."""
from __future__ import annotations

import json

import pytest

from ablation_fixtures import dying_command, write_grid
from kgvlp.ablation.grid import load_grid
from kgvlp.ablation.launch import launch
from kgvlp.ablation.state import log_tail, read_json, read_status, run_dir

# grad_accum 100 passes validation but the trainer refuses it: 48 studies give 3 batches of 8.
AXES = {"trainer.grad_accum": [1, 100], "seed": [0, 1]}
EXCLUDE = [{"trainer.grad_accum": 100, "seed": 1}]


def by_axes(grid, grid_dir) -> dict[tuple, dict]:
    return {tuple(r.axes.values()): {"id": r.run_id, **read_status(run_dir(grid_dir, r.run_id))} for r in grid.runs}


@pytest.fixture(scope="module")
def first_launch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    grid = load_grid(write_grid(folder, AXES, exclude=EXCLUDE, resources={"concurrent": 2, "cpus_per_run": 1}))
    killed = next(r.run_id for r in grid.runs if r.axes == {"trainer.grad_accum": "1", "seed": "1"})
    mp = pytest.MonkeyPatch()
    mp.setenv("KGVLP_TEST_KILL_RUN", killed)
    try:
        result = launch(grid, folder / "grid", command=dying_command(), view=False)
    finally:
        mp.undo()
    return grid, folder / "grid", result


def test_two_runs_execute_at_once_and_never_three(first_launch):
    grid, grid_dir, _ = first_launch
    spans = [(s["started"], s["finished"]) for s in by_axes(grid, grid_dir).values()]

    at_once = [sum(start <= t < end for start, end in spans) for t, _ in spans]
    assert max(at_once) == 2


def test_a_failed_and_a_killed_run_do_not_stop_the_others(first_launch):
    grid, grid_dir, result = first_launch
    runs = by_axes(grid, grid_dir)

    assert runs[("1", "0")]["state"] == "done"
    assert runs[("1", "1")]["state"] == "interrupted"
    assert runs[("100", "0")]["state"] == "failed"
    assert "train: ValueError" in runs[("100", "0")]["error"] and "grad_accum" in runs[("100", "0")]["error"]
    assert "grad_accum" in log_tail(run_dir(grid_dir, runs[("100", "0")]["id"]))
    killed = run_dir(grid_dir, runs[("1", "1")]["id"])
    assert (killed / "checkpoints" / "latest").read_text() == "step_0000002"
    assert sorted(result["outcome"].values()) == ["done", "failed", "interrupted"]


def test_results_are_tidy_rows_with_the_axes_as_columns(first_launch):
    import pandas as pd
    grid, grid_dir, _ = first_launch
    frame = pd.read_csv(grid_dir / "results.csv")

    assert list(frame.columns) == ["run_id", "trainer.grad_accum", "seed", "state", "metric", "value"]
    assert set(frame.run_id) == {by_axes(grid, grid_dir)[("1", "0")]["id"]}
    assert "linear_probe/auroc@50%" in set(frame.metric) and "train/loss/total" in set(frame.metric)


def test_rerun_skips_done_resumes_killed_and_leaves_failed(first_launch):
    grid, grid_dir, _ = first_launch
    before = by_axes(grid, grid_dir)

    result = launch(grid, grid_dir, view=False)
    after = by_axes(grid, grid_dir)

    assert result["plan"].to_run == [before[("1", "1")]["id"]]
    assert after[("1", "0")]["attempt"] == 1 and after[("1", "0")]["started"] == before[("1", "0")]["started"]
    resumed = after[("1", "1")]
    assert resumed["state"] == "done" and resumed["attempt"] == 2 and resumed["resumed_from"] == 2
    folder = run_dir(grid_dir, resumed["id"])
    assert "resuming from step_0000002 at step 2/4" in (folder / "log.txt").read_text()
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert after[("100", "0")]["attempt"] == 1                 # failed: left alone


def test_retry_failed_reruns_only_the_failed_run(first_launch):
    grid, grid_dir, _ = first_launch

    result = launch(grid, grid_dir, retry_failed=True, view=False)

    failed = by_axes(grid, grid_dir)[("100", "0")]
    assert result["plan"].to_run == [failed["id"]]
    assert failed["state"] == "failed" and failed["attempt"] == 2


def test_an_evaluation_failure_marks_the_run_failed_and_keeps_its_training(tmp_path):
    path = write_grid(tmp_path, {"seed": [0]}, eval={"tasks": ["linear_probe"], "data": str(tmp_path / "nowhere")})
    grid = load_grid(path)
    folder = run_dir(tmp_path / "grid", grid.runs[0].run_id)

    launch(grid, tmp_path / "grid", view=False)
    failed = read_status(folder)
    fixed = load_grid(write_grid(tmp_path, {"seed": [0]}))     # same training, eval on SynthCXR
    launch(fixed, tmp_path / "grid", retry_failed=True, view=False)

    assert failed["state"] == "failed" and failed["error"].startswith("eval: ")
    assert failed["train_done"] and (folder / "final" / "model.safetensors").is_file()
    assert read_status(folder)["state"] == "done"
    assert "starting at step 0/4" in (folder / "log.txt").read_text()
    assert (folder / "log.txt").read_text().count("starting at step") == 1   # not trained again
    assert "linear_probe/auroc@50%" in read_json(folder / "results.json")["metrics"]
