"""Where runs execute: ``local`` (subprocesses on this machine), ``slurm`` (submitit job
array), ``ray`` (Ray tasks). Each takes the grid folder and the run ids to execute and
returns when they have finished (or, for SLURM with ``wait=False``, once submitted)."""
from __future__ import annotations

import os
import sys

EXECUTORS = ("local", "slurm", "ray")


def worker_command(gpus_per_run: int = 0) -> list[str]:
    """The process that runs one run: the worker module, under torchrun for >1 GPU."""
    if gpus_per_run > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={gpus_per_run}", "-m", "kgvlp.ablation.worker"]
    return [sys.executable, "-m", "kgvlp.ablation.worker"]


# Launcher variables a parent process (a test runner, an outer torchrun) may carry; a run
# must not inherit them or it would join the wrong process group.
INHERITED_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                       "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def run_environment(cpus: int, gpu_ids: list[int] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_DIST_VARS}
    threads = str(max(1, cpus))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES=",".join(map(str, gpu_ids or [])))
    return env
