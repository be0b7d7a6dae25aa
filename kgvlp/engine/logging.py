"""Metrics sinks: JSONL in the run folder, TensorBoard scalars, and the console progress bar."""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import Progress, TextColumn

from kgvlp import progress


class MetricsLogger:
    """Rank 0 writes ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.jsonl = None
        self.tensorboard = None
        if enabled:
            self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; keep training if it is broken
                self.tensorboard = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def progress_bar(enabled: bool) -> Progress:
    """The training bar: the shared bar plus a status column (loss terms, pairs/s)."""
    return progress.bar(enabled, False, TextColumn("{task.fields[status]}"))
