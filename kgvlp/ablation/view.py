"""The whole grid at a glance: a live progress view while runs execute, and the status
table (done / running / failed, with the failing runs' log tails)."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from kgvlp.ablation.state import (effective_state, last_metrics, log_tail, orphan_runs, read_json, read_status,
                                  run_dir)

STYLE = {"done": "green", "failed": "red", "running": "cyan", "queued": "yellow", "interrupted": "magenta",
         "pending": "dim"}


def grid_rows(grid_dir: Path, run_ids: list[str] | None = None, check_slurm: bool = True) -> list[dict]:
    """One dict per run: id, axes, state, stage, attempt, step/max, loss, wall time, error."""
    meta = read_json(Path(grid_dir) / "grid.json")
    rows = []
    for run in meta.get("runs", []):
        if run_ids is not None and run["run_id"] not in run_ids:
            continue
        folder = run_dir(grid_dir, run["run_id"])
        status = read_status(folder)
        if not check_slurm:
            status = {k: v for k, v in status.items() if k != "slurm_job"}
        metrics = last_metrics(folder) if status else {}
        state = effective_state(status) if status else "pending"
        started, finished = status.get("started"), status.get("finished")
        wall = ((finished if finished and state in ("done", "failed") else time.time()) - started) if started else None
        rows.append({"run_id": run["run_id"], "axes": run["axes"], "state": state, "stage": status.get("stage"),
                     "attempt": status.get("attempt", 0), "step": metrics.get("step", status.get("step")),
                     "max_steps": status.get("max_steps") or run.get("max_steps"), "loss": metrics.get("loss/total"),
                     "wall_s": wall, "error": status.get("error"), "slurm_job": status.get("slurm_job")})
    return rows


def _fmt_time(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def status_table(rows: list[dict], title: str = "") -> Table:
    axes = list(rows[0]["axes"]) if rows else []
    table = Table(title=title, title_justify="left")
    for column in ["run", *axes, "state", "try", "step", "loss", "time", "error / job"]:
        table.add_column(column, overflow="fold")
    for row in rows:
        step = f"{row['step'] or 0}/{row['max_steps']}" if row["max_steps"] else str(row["step"] or "")
        state = row["state"] + (f" ({row['stage']})" if row["stage"] and row["state"] in ("running", "failed") else "")
        extra = row["error"] or (f"slurm {row['slurm_job']}" if row["slurm_job"] else "")
        table.add_row(row["run_id"], *(str(row["axes"].get(a, "")) for a in axes),
                      f"[{STYLE.get(row['state'], '')}]{state}[/]", str(row["attempt"] or ""), step,
                      f"{row['loss']:.3f}" if isinstance(row["loss"], float) else "", _fmt_time(row["wall_s"]),
                      extra or "")
    return table


def summary_line(rows: list[dict]) -> str:
    counts = Counter(r["state"] for r in rows)
    return f"{len(rows)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STYLE if counts[s])


def failed_tails(grid_dir: Path, rows: list[dict], lines: int = 12) -> list[Panel]:
    return [Panel(log_tail(run_dir(grid_dir, r["run_id"]), lines) or "(no log)",
                  title=f"{r['run_id']} failed: {r['error']}", border_style="red")
            for r in rows if r["state"] == "failed"]


def print_status(grid_dir: Path, console: Console | None = None, tail_lines: int = 12) -> list[dict]:
    console = console or Console(width=200)
    rows = grid_rows(grid_dir)
    console.print(status_table(rows, title=f"{Path(grid_dir)} — {summary_line(rows)}"))
    for panel in failed_tails(grid_dir, rows, tail_lines):
        console.print(panel)
    orphans = orphan_runs(grid_dir)
    if orphans:
        console.print(f"[yellow]{len(orphans)} run folder(s) in {Path(grid_dir) / 'runs'} are no longer in the grid "
                      f"(an axis level changed): {', '.join(orphans)}. They are left out of the report; "
                      f"`kgvlp ablate prune {grid_dir}` moves them to {Path(grid_dir) / 'orphans'}.[/]")
    return rows


class ProgressView:
    """Live table on a terminal; one line per state change when piped (CI, logs)."""

    def __init__(self, grid_dir: Path, run_ids: list[str], console: Console | None = None):
        self.grid_dir, self.run_ids = Path(grid_dir), run_ids
        self.console = console or Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=1, transient=False) \
            if self.console.is_terminal else None
        self._last: dict[str, str] = {}
        self.started = time.time()

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.refresh()
            self.live.__exit__(*exc)

    def refresh(self) -> list[dict]:
        rows = grid_rows(self.grid_dir, self.run_ids, check_slurm=False)
        head = f"{summary_line(rows)} · {_fmt_time(time.time() - self.started)} elapsed"
        if self.live:
            self.live.update(Group(status_table(rows, title=head)))
            return rows
        for row in rows:
            if self._last.get(row["run_id"], "pending") != row["state"]:
                self._last[row["run_id"]] = row["state"]
                axes = " ".join(f"{k}={v}" for k, v in row["axes"].items())
                note = f" — {row['error']}" if row["error"] else ""
                self.console.print(f"[{_fmt_time(time.time() - self.started)}] {row['run_id']} ({axes}): "
                                   f"{row['state']}{note} · {summary_line(rows)}", highlight=False)
        return rows
