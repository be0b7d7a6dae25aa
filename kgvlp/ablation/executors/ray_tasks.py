"""Ray: one Ray task per run, on an existing cluster (``ray start --head`` / ``--address``)
or a local instance. Ray schedules by the task's resources (``num_cpus``, ``num_gpus``).

The task starts the worker as a subprocess (a fresh process per run: its own process
group, CUDA state and log file), with ranks and devices set explicitly: Ray narrows
CUDA_VISIBLE_DEVICES to the task's GPUs, so LOCAL_RANK 0 is the first of *those*.
Fault tolerance is Ray's retry: a worker killed by a signal (OOM killer, a lost node)
raises ``RunCrashed`` and Ray retries the task up to ``max_requeues`` times; the retry
resumes from the run's checkpoint. A run that fails with an error is not retried.
The grid folder must be on storage every node sees.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from kgvlp.ablation.executors import INHERITED_DIST_VARS, worker_command
from kgvlp.ablation.grid import Resources
from kgvlp.ablation.state import read_status, run_dir, update_status


class RunCrashed(RuntimeError):
    """The worker process died from a signal; Ray retries the task."""


def run_task(grid_dir: str, run_id: str, cpus: int, gpus: int, command: list[str] | None = None) -> str:
    """The body of the Ray task (module-level so it pickles by reference)."""
    folder = run_dir(Path(grid_dir), run_id)
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_DIST_VARS}
    threads = str(max(1, cpus))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with open(folder / "log.txt", "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} ray task on {os.uname().nodename} =====\n".encode())
        log.flush()
        code = subprocess.call([*(command or worker_command(gpus)), grid_dir, run_id, "ray"], stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    if read_status(folder).get("state") == "done":   # finished before the signal or exit code: stays done
        return "done"
    if code < 0:
        update_status(folder, state="queued", error=f"worker killed by signal {-code}; Ray retries it")
        raise RunCrashed(f"run {run_id}: worker killed by signal {-code}")
    return "done" if code == 0 else "failed"


def run_ray(grid_dir: Path, run_ids: list[str], resources: Resources, view=None, address: str | None = None,
            command: list[str] | None = None, poll_s: float = 1.0, init_kwargs: dict | None = None) -> dict[str, str]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from None
    if resources.nodes_per_run > 1:
        raise RuntimeError("--executor ray runs each run on one node; use --executor slurm for multi-node runs")
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
        if address:
            kwargs["address"] = address
        ray.init(**kwargs)
    grid_dir = str(Path(grid_dir).resolve())
    task = ray.remote(run_task).options(num_cpus=resources.cpus_per_run, num_gpus=resources.gpus_per_run,
                                        max_retries=resources.max_requeues, retry_exceptions=[RunCrashed])
    limit = resources.concurrent or len(run_ids)
    queue, pending, outcome = list(run_ids), {}, {}
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                run_id = queue.pop(0)
                update_status(run_dir(grid_dir, run_id), state="queued", executor="ray", queued=time.time())
                ref = task.remote(grid_dir, run_id, resources.cpus_per_run, resources.gpus_per_run, command)
                pending[ref] = run_id
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
            for ref in ready:
                run_id = pending.pop(ref)
                try:
                    outcome[run_id] = ray.get(ref)
                except Exception as err:  # noqa: BLE001 — retries exhausted, or the task could not run
                    folder = run_dir(grid_dir, run_id)
                    if read_status(folder).get("state") != "failed":
                        update_status(folder, state="failed", finished=time.time(),
                                      error=f"ray: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
                    outcome[run_id] = "failed"
            if view is not None:
                view.refresh()
    finally:
        if started_here:
            ray.shutdown()
    return outcome
