"""The Ray executor on a local CPU-only Ray instance: a run is a Ray task; killed
mid-training, Ray retries it and it resumes from its checkpoint."""
from __future__ import annotations

import pytest

from ablation_fixtures import dying_command, write_grid
from kgvlp.ablation.grid import Resources, load_grid
from kgvlp.ablation.launch import prepare
from kgvlp.ablation.state import read_status, run_dir

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
pytestmark = pytest.mark.ray


def test_a_run_is_a_ray_task_and_when_killed_ray_retries_it_from_its_checkpoint(tmp_path, monkeypatch):
    from kgvlp.ablation.executors.ray_tasks import run_ray
    grid = load_grid(write_grid(tmp_path, {"seed": [0]}))
    grid_dir = tmp_path / "grid"
    prepare(grid, grid_dir)
    run_id = grid.runs[0].run_id
    monkeypatch.setenv("KGVLP_TEST_KILL_RUN", run_id)      # Ray's local workers inherit it

    outcome = run_ray(grid_dir, [run_id], Resources(cpus_per_run=1, max_requeues=1),
                      command=dying_command(), init_kwargs={"num_cpus": 2})

    assert outcome == {run_id: "done"}
    status = read_status(run_dir(grid_dir, run_id))
    assert status["attempt"] == 2 and status["resumed_from"] == 2 and status["executor"] == "ray"
    log = (run_dir(grid_dir, run_id) / "log.txt").read_text()
    assert log.count("ray task on") == 2 and "resuming from step_0000002" in log


def test_without_ray_the_error_says_what_to_install(tmp_path, monkeypatch):
    import builtins
    from kgvlp.ablation.executors.ray_tasks import run_ray
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_ray)

    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[ray\]'"):
        run_ray(tmp_path, ["x"], Resources())
