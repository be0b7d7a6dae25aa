"""``python -m kgvlp.ablation.worker GRID_DIR RUN_ID``: one run in its own process (the local
and Ray executors start this; under torchrun every rank runs it). Exit 0 = done, 1 = failed."""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: python -m kgvlp.ablation.worker GRID_DIR RUN_ID [EXECUTOR]", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("KGVLP_IGNORE_USR2"):   # under SLURM: the submitit parent handles preemption
        import signal
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    from kgvlp.ablation.runner import run_one
    return 0 if run_one(argv[0], argv[1], *argv[2:]) == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
