"""N concurrent runs on this machine, each a subprocess with its own GPUs (or the CPU)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kgvlp.ablation.executors import run_environment, worker_command
from kgvlp.ablation.grid import Resources
from kgvlp.ablation.state import read_status, run_dir, update_status


def visible_gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def run_local(grid_dir: Path, run_ids: list[str], resources: Resources, view=None,
              command: list[str] | None = None, poll_s: float = 1.0) -> dict[str, str]:
    """Run ``run_ids`` with ``resources.concurrent`` at a time; returns {run_id: state}.

    A run that exits non-zero is failed (the worker records its error); one killed by a
    signal is interrupted (re-running the grid resumes it). Neither stops the others."""
    concurrent = max(1, resources.concurrent or 1)
    gpus_per_run = resources.gpus_per_run
    free_gpus = list(range(visible_gpus()))
    if gpus_per_run and gpus_per_run * min(concurrent, len(run_ids)) > len(free_gpus):
        concurrent = max(1, len(free_gpus) // gpus_per_run)
        if gpus_per_run > len(free_gpus):
            raise RuntimeError(f"--gpus-per-run {gpus_per_run} but this machine has {len(free_gpus)} GPU(s)")
    queue = list(run_ids)
    active: dict[str, tuple[subprocess.Popen, list[int], object]] = {}
    outcome: dict[str, str] = {}
    base = command or worker_command(gpus_per_run)
    try:
        while queue or active:
            while queue and len(active) < concurrent:
                run_id = queue.pop(0)
                gpus = [free_gpus.pop(0) for _ in range(gpus_per_run)]
                folder = run_dir(grid_dir, run_id)
                log = open(folder / "log.txt", "ab")
                log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} local worker =====\n".encode())
                log.flush()
                proc = subprocess.Popen([*base, str(grid_dir), run_id, "local"], stdout=log,
                                        stderr=subprocess.STDOUT, env=run_environment(resources.cpus_per_run, gpus))
                active[run_id] = (proc, gpus, log)
            for run_id, (proc, gpus, log) in list(active.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                free_gpus.extend(gpus)
                del active[run_id]
                outcome[run_id] = _settle(run_dir(grid_dir, run_id), code)
            if view is not None:
                view.refresh()
            if active:
                time.sleep(poll_s)
    finally:
        for run_id, (proc, _, log) in active.items():   # Ctrl-C: the runs stay resumable
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            _settle(run_dir(grid_dir, run_id), proc.returncode if proc.returncode is not None else -15)
    return outcome


def _settle(folder: Path, code: int) -> str:
    """The state after the worker exited with ``code``, recorded if the worker could not.

    A run the worker recorded as ``done`` stays done whatever the exit code: its results are
    written, and a signal while the process exits (or a non-zero code from its teardown)
    must not make the next launch redo it."""
    state = read_status(folder).get("state")
    if state == "done":
        return "done"
    if code < 0:   # killed by a signal: resumable
        update_status(folder, state="interrupted", finished=time.time(), error=None)
        return "interrupted"
    if state != "failed":
        update_status(folder, state="failed", finished=time.time(),
                      error=f"worker exited with status {code} (see log.txt)")
    return "failed"
