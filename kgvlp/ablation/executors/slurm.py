"""SLURM through submitit: one job array, one array task per run, per-run resources.

Each array task runs ``nodes_per_run × max(1, gpus_per_run)`` SLURM tasks (one per rank);
every task calls ``SlurmRun()(grid_dir, run_id)``, which computes the torch.distributed
variables from SLURM's own (``distributed_env``) and starts the run's worker process.

Preemption or a time-out sends USR2 (submitit asks for it 90 s before the limit); submitit
calls ``SlurmRun.checkpoint`` on rank 0, which hands back the same call, and requeues the
job. The requeued call finds ``checkpoints/latest`` in its own run folder and resumes from
it: the run resumes from its last periodic checkpoint (``trainer.checkpoint_every``), as no
checkpoint can be written from a signal handler that only rank 0 receives.
"""
from __future__ import annotations

import os
import re
import sys
import time
import zlib
from pathlib import Path

from kgvlp.ablation.grid import Resources
from kgvlp.ablation.state import effective_state, read_status, run_dir, update_status

try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # the class below still needs a base; run_slurm says what to install
    submitit = None
    Checkpointable = object
    DelayedSubmission = None


def require_submitit() -> None:
    if submitit is None:
        raise RuntimeError("--executor slurm needs submitit: pip install -e '.[slurm]' (or pip install submitit)")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM nodelist: 'gpu[03-05,07],cpu1' → 'gpu03'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return nodelist
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def distributed_env(environ: dict[str, str], visible_gpus: int, master_addr: str | None = None) -> dict[str, str]:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT for this SLURM task, set explicitly.

    LOCAL_RANK is the index of this task's GPU among the devices it can see: when SLURM
    binds one GPU per task (CUDA_VISIBLE_DEVICES narrowed to one device) that is 0, not
    SLURM_LOCALID — a hostname-based local rank would point at a device that does not exist.
    """
    local_id = int(environ.get("SLURM_LOCALID", "0"))
    tasks_here = int(re.match(r"\d+", environ.get("SLURM_NTASKS_PER_NODE", environ.get("SLURM_TASKS_PER_NODE", "1")))
                     .group(0))
    if visible_gpus == 0:
        device_index = 0
    elif visible_gpus >= tasks_here:
        device_index = local_id
    else:
        device_index = local_id % visible_gpus
    job = environ.get("SLURM_ARRAY_JOB_ID", environ.get("SLURM_JOB_ID", "0"))
    task = environ.get("SLURM_ARRAY_TASK_ID", "0")
    return {"RANK": environ.get("SLURM_PROCID", "0"), "WORLD_SIZE": environ.get("SLURM_NTASKS", "1"),
            "LOCAL_RANK": str(device_index), "LOCAL_WORLD_SIZE": str(tasks_here),
            "MASTER_ADDR": master_addr or first_host(environ.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            # Same on every task of this run, different between concurrent array tasks.
            "MASTER_PORT": str(20_000 + zlib.crc32(f"{job}_{task}".encode()) % 20_000)}


class SlurmRun(Checkpointable):
    """The callable each SLURM task runs (pickled by submitit; requeued with the same args).

    The run itself is a worker subprocess: submitit's signal handlers (USR2 → requeue,
    SIGTERM → ignore) must not be inherited by the processes the run forks (data loader
    and generator pools would then ignore the SIGTERM that stops them, and hang)."""

    def __call__(self, grid_dir: str, run_id: str) -> str:
        import subprocess
        from kgvlp.ablation.executors import worker_command
        visible = _visible_gpus()
        env = {**os.environ, **distributed_env(dict(os.environ), visible),
               "KGVLP_IGNORE_USR2": "1",        # the requeue signal is for this process, not the run
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if visible == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        folder = run_dir(Path(grid_dir), run_id)
        print(f"kgvlp ablate: run {run_id}, rank {env['RANK']}/{env['WORLD_SIZE']}; output in "
              f"{folder / 'log.txt'}", flush=True)
        with open(folder / "log.txt", "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} slurm job {os.environ.get('SLURM_JOB_ID')} "
                      f"rank {env['RANK']} =====\n".encode())
            log.flush()
            code = subprocess.call([*worker_command(0), str(grid_dir), run_id, "slurm"], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
        if env["RANK"] != "0":
            return "done" if code == 0 else "failed"
        from kgvlp.ablation.executors.local import _settle
        return _settle(folder, code)

    def checkpoint(self, grid_dir: str, run_id: str) -> "DelayedSubmission":
        """Preempted or timed out: requeue the same call; it resumes from checkpoints/latest."""
        if os.environ.get("SLURM_PROCID", "0") == "0":
            folder = run_dir(Path(grid_dir), run_id)
            update_status(folder, state="queued", requeued=int(read_status(folder).get("requeued", 0)) + 1)
        return DelayedSubmission(self, grid_dir, run_id)


def _visible_gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def make_executor(grid_name: str, grid_dir: Path, resources: Resources, array_size: int):
    require_submitit()
    executor = submitit.AutoExecutor(folder=str(Path(grid_dir) / "slurm"), cluster="slurm",
                                     slurm_max_num_timeout=resources.max_requeues)
    tasks = max(1, resources.gpus_per_run)
    params = dict(name=f"kgvlp-{grid_name}", timeout_min=resources.time_min, nodes=resources.nodes_per_run,
                  tasks_per_node=tasks, cpus_per_task=max(1, resources.cpus_per_run // tasks))
    if resources.gpus_per_run:
        params["gpus_per_node"] = resources.gpus_per_run
    if resources.mem_gb:
        params["mem_gb"] = resources.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(resources, key):
            params[f"slurm_{key}"] = getattr(resources, key)
    if resources.concurrent:
        params["slurm_array_parallelism"] = resources.concurrent
    executor.update_parameters(**params)
    return executor


def run_slurm(grid, grid_dir: Path, run_ids: list[str], resources: Resources, view=None, wait: bool = True,
              poll_s: float = 2.0) -> dict[str, str]:
    """Submit ``run_ids`` as one job array; with ``wait``, follow them until each is done,
    failed or gone from the queue. Returns {run_id: state}."""
    executor = make_executor(grid.name, grid_dir, resources, len(run_ids))
    jobs = executor.map_array(SlurmRun(), [str(Path(grid_dir).resolve())] * len(run_ids), run_ids)
    for run_id, job in zip(run_ids, jobs):
        update_status(run_dir(grid_dir, run_id), state="queued", executor="slurm", slurm_job=str(job.job_id),
                      queued=time.time())
    print(f"submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs); submitit logs in "
          f"{Path(grid_dir) / 'slurm'}", file=sys.stderr, flush=True)
    if not wait:
        return {run_id: "queued" for run_id in run_ids}
    return wait_for(grid_dir, run_ids, view, poll_s)


def wait_for(grid_dir: Path, run_ids: list[str], view=None, poll_s: float = 2.0) -> dict[str, str]:
    """Poll the runs' status files (and squeue) until none is queued or running."""
    outcome: dict[str, str] = {}
    while True:
        for run_id in run_ids:
            outcome[run_id] = effective_state(read_status(run_dir(grid_dir, run_id)))
        if view is not None:
            view.refresh()
        if all(s not in ("queued", "running") for s in outcome.values()):
            return outcome
        time.sleep(poll_s)
