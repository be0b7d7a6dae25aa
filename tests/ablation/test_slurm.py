"""The SLURM executor against a real one-node SLURM cluster on localhost, started by
tools/slurm_local_cluster.sh (skipped, with the reason, when that cannot run here).

Marked ``slurm``: ~1–2 min. ``pytest -m "not slurm"`` leaves them out."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from ablation_fixtures import ROOT, write_grid
from kgvlp.ablation.grid import load_grid
from kgvlp.ablation.launch import launch, prepare
from kgvlp.ablation.state import read_status, run_dir

pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM cluster needs root (slurmd, munged)")
    if os.environ.get("KGVLP_SKIP_SLURM"):
        pytest.skip("KGVLP_SKIP_SLURM is set")
    done = subprocess.run(["bash", str(ROOT / "tools" / "slurm_local_cluster.sh"), "start"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 77:
        pytest.skip(f"no SLURM here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert shutil.which("sbatch")


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_grid_runs_as_a_job_array(cluster, tmp_path):
    grid = load_grid(write_grid(tmp_path, {"seed": [0, 1]}, resources={"cpus_per_run": 1, "time_min": 10}))

    result = launch(grid, tmp_path / "grid", executor="slurm", view=False)

    assert set(result["outcome"].values()) == {"done"}
    jobs = [read_status(run_dir(tmp_path / "grid", r.run_id))["slurm_job"] for r in grid.runs]
    assert len({j.split("_")[0] for j in jobs}) == 1 and sorted(j.split("_")[1] for j in jobs) == ["0", "1"]
    for run in grid.runs:
        assert (run_dir(tmp_path / "grid", run.run_id) / "results.json").is_file()


def test_a_preempted_run_is_requeued_and_resumes_from_its_checkpoint(cluster, tmp_path):
    from kgvlp.ablation.executors.slurm import run_slurm, wait_for
    grid = load_grid(write_grid(tmp_path, {"seed": [0]}, overrides={"trainer.max_steps": 40},
                                resources={"cpus_per_run": 1, "time_min": 10}))
    grid_dir = tmp_path / "grid"
    prepare(grid, grid_dir)
    run_id = grid.runs[0].run_id
    folder = run_dir(grid_dir, run_id)
    run_slurm(grid, grid_dir, [run_id], grid.spec.resources, wait=False)
    job = read_status(folder)["slurm_job"]
    wait_until(lambda: (folder / "checkpoints" / "latest").is_file(), 240, "the first checkpoint")

    subprocess.run(["scancel", "--signal=USR2", job], check=True)      # what preemption sends
    wait_until(lambda: read_status(folder).get("requeued") == 1, 60, "the requeue")
    # SLURM holds a requeued job ~2 min (its BeginTime); release it once it is held.
    wait_until(lambda: "BeginTime" in subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True,
                                                     text=True).stdout, 60, "the requeued job to be pending")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    outcome = wait_for(grid_dir, [run_id], poll_s=1.0)

    status = read_status(folder)
    assert outcome == {run_id: "done"}
    assert status["attempt"] == 2 and status["resumed_from"] >= 2
    log = (folder / "log.txt").read_text()
    assert f"resuming from step_{status['resumed_from']:07d}" in log
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 40 and sorted(set(steps)) == list(range(1, 41))
