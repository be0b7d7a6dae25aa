"""Bookkeeping of a grid folder: one ``status.json`` per run, written atomically.

    GRID_DIR/grid.yaml        the grid file as launched (+ runs.csv: the runs table)
    GRID_DIR/runs/<id>/       a kgvlp run folder + run.json (what to run), status.json, log.txt,
                              eval/ (kgvlp.eval output), results.json (flat metrics)
    GRID_DIR/orphans/<id>/    run folders the grid no longer lists, moved by ``kgvlp ablate prune``

A run's state is one of: pending (never started), queued (handed to SLURM/Ray), running
(its heartbeat is fresh), interrupted (it was running but its process is gone: resumable),
done, failed (with the error and the stage that failed: train or eval).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from kgvlp.files import write_text_atomic

HEARTBEAT_S = 10.0
STALE_AFTER_S = 4 * HEARTBEAT_S
STATES = ("pending", "queued", "running", "interrupted", "done", "failed")


def write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def run_dir(grid_dir: Path, run_id: str) -> Path:
    return Path(grid_dir) / "runs" / run_id


def orphan_runs(grid_dir: Path) -> list[str]:
    """Run folders under GRID_DIR/runs that grid.json no longer lists: an axis level was
    renamed or removed after they ran. Their results are not in the report."""
    listed = {run["run_id"] for run in read_json(Path(grid_dir) / "grid.json").get("runs", [])}
    runs = Path(grid_dir) / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in listed) if runs.is_dir() else []


def move_orphans(grid_dir: Path) -> list[Path]:
    """Move the orphan run folders to GRID_DIR/orphans/ (kept, not deleted); a name taken
    there by an earlier prune gets a numeric suffix. Returns the new paths."""
    moved = []
    for run_id in orphan_runs(grid_dir):
        target = Path(grid_dir) / "orphans" / run_id
        suffix = 1
        while target.exists():
            target, suffix = Path(grid_dir) / "orphans" / f"{run_id}.{suffix}", suffix + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir(grid_dir, run_id)), str(target))
        moved.append(target)
    return moved


def read_status(folder: Path) -> dict:
    return read_json(Path(folder) / "status.json")


def update_status(folder: Path, **fields: Any) -> dict:
    status = read_status(folder)
    status.update(fields, updated=time.time())
    write_json(Path(folder) / "status.json", status)
    return status


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _slurm_job_alive(job_id: str) -> bool | None:
    """True/False from squeue; None when squeue is unavailable."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return False if "Invalid job id" in out.stderr else None
    return any(s in out.stdout for s in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "COMPLETING",
                                         "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"))


def effective_state(status: dict, now: float | None = None) -> str:
    """The state a run is in now: a 'running' run whose process is gone is 'interrupted'."""
    state = status.get("state", "pending")
    if state == "interrupted" and status.get("slurm_job") and _slurm_job_alive(status["slurm_job"]):
        return "queued"          # requeued by SLURM after a preemption or time-out
    if state not in ("running", "queued"):
        return state
    now = time.time() if now is None else now
    if status.get("host") == socket.gethostname() and status.get("pid") and state == "running":
        if not _pid_alive(int(status["pid"])):
            return "interrupted"
    if status.get("slurm_job"):
        alive = _slurm_job_alive(status["slurm_job"])
        if alive is not None:
            return state if alive else "interrupted"
    if state == "queued":
        return state if status.get("executor") in ("ray", "slurm") and \
            now - status.get("updated", 0) < 24 * 3600 else "interrupted"
    return state if now - status.get("heartbeat", status.get("updated", 0)) < STALE_AFTER_S else "interrupted"


class Heartbeat:
    """A daemon thread refreshing ``heartbeat`` in status.json while a run is alive."""

    def __init__(self, folder: Path, interval: float = HEARTBEAT_S):
        self.folder, self.interval = Path(folder), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                update_status(self.folder, heartbeat=time.time())
            except OSError:
                pass

    def __enter__(self):
        update_status(self.folder, heartbeat=time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def log_tail(folder: Path, lines: int = 15) -> str:
    path = Path(folder) / "log.txt"
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64_000))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def last_metrics(folder: Path) -> dict:
    """The last row of metrics.jsonl (step, loss/total, …), read from its tail."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return {}
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 16_000))
        lines = handle.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}
