"""How the executors record a run after its worker exits: the exit code decides only for runs
the worker did not finish; a run recorded ``done`` stays done (re-running the grid would
otherwise redo it and rewrite its results)."""
from __future__ import annotations

import pytest

from kgvlp.ablation.executors.local import _settle
from kgvlp.ablation.state import read_status, update_status


@pytest.mark.parametrize("code", [0, 1, -9, -15])
def test_a_done_run_stays_done_whatever_the_exit_code(tmp_path, code):
    update_status(tmp_path, state="done", finished=123.0)

    assert _settle(tmp_path, code) == "done"
    assert read_status(tmp_path)["state"] == "done" and read_status(tmp_path)["finished"] == 123.0


def test_a_running_run_killed_by_a_signal_is_interrupted(tmp_path):
    update_status(tmp_path, state="running")

    assert _settle(tmp_path, -9) == "interrupted"
    assert read_status(tmp_path)["state"] == "interrupted"


def test_a_running_run_that_exits_non_zero_is_failed_with_the_code(tmp_path):
    update_status(tmp_path, state="running")

    assert _settle(tmp_path, 3) == "failed"
    assert "status 3" in read_status(tmp_path)["error"]


# A worker that records its run done, then dies by SIGKILL while exiting.
DONE_THEN_KILLED = ("import os, sys; from kgvlp.ablation.state import run_dir, update_status; "
                    "update_status(run_dir(sys.argv[1], sys.argv[2]), state='done'); os.kill(os.getpid(), 9)")


def test_a_ray_task_whose_run_finished_before_a_signal_is_done_and_not_retried(tmp_path):
    import sys

    from kgvlp.ablation.executors.ray_tasks import run_task
    from kgvlp.ablation.state import run_dir
    folder = run_dir(tmp_path, "r1")
    folder.mkdir(parents=True)

    state = run_task(str(tmp_path), "r1", 1, 0, command=[sys.executable, "-c", DONE_THEN_KILLED])

    assert state == "done" and read_status(folder)["state"] == "done"
