"""Launching a grid: write the grid folder, decide what to run, hand it to an executor,
collect the results.

Re-running the same grid is the way to resume it: done runs are skipped, interrupted runs
resume from their checkpoints, failed runs are re-run only with ``retry_failed``, and runs
that are still running or queued elsewhere are left alone.
"""
from __future__ import annotations

import dataclasses
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from kgvlp.ablation.grid import Grid, GridError, Resources
from kgvlp.ablation.state import effective_state, read_json, read_status, run_dir, write_json


@dataclass
class Plan:
    to_run: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)   # reason → run ids


def prepare(grid: Grid, grid_dir: Path) -> None:
    """Write GRID_DIR/grid.json (what report/status need), a copy of the grid file, the
    runs table and each run's run.json."""
    grid_dir.mkdir(parents=True, exist_ok=True)
    existing = read_json(grid_dir / "grid.json")
    if existing and existing.get("name") != grid.name:
        raise GridError(f"{grid_dir} holds grid {existing.get('name')!r}, not {grid.name!r}; choose another --out")
    shutil.copyfile(grid.source, grid_dir / "grid.yaml")
    runs = [{"run_id": r.run_id, "axes": r.axes, "overrides": r.overrides, "max_steps": r.max_steps}
            for r in grid.runs]
    write_json(grid_dir / "grid.json", {
        "name": grid.name, "source": str(grid.source.resolve()), "base": str(grid.base),
        "axes": [a.name for a in grid.axes], "config_axes": grid.config_axes, "seed_axis": grid.seed_axis,
        "baseline": grid.spec.baseline, "metrics": grid.spec.metrics, "runs": runs})
    for run in grid.runs:
        folder = run_dir(grid_dir, run.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "run.json", {
            "name": f"{grid.name}-{run.run_id}", "grid": grid.name, "run_id": run.run_id, "axes": run.axes,
            "base": str(grid.base), "overrides": run.overrides, "eval": dataclasses.asdict(grid.spec.eval),
            "checkpoints": dataclasses.asdict(grid.spec.checkpoints)})
    _write_runs_csv(grid, grid_dir / "runs.csv")


def _write_runs_csv(grid: Grid, path: Path) -> None:
    import csv
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run_id", *(a.name for a in grid.axes), "overrides"])
        for run in grid.runs:
            writer.writerow([run.run_id, *(run.axes[a.name] for a in grid.axes), " ".join(run.overrides)])


def plan(grid: Grid, grid_dir: Path, retry_failed: bool = False) -> Plan:
    result = Plan()
    for run in grid.runs:
        status = read_status(run_dir(grid_dir, run.run_id))
        state = effective_state(status) if status else "pending"
        if state in ("pending", "interrupted") or (state == "failed" and retry_failed):
            result.to_run.append(run.run_id)
        elif state == "done" and _needs_eval(grid_dir, run.run_id):
            result.to_run.append(run.run_id)           # the eval spec changed: evaluate again
        else:
            reason = {"done": "done", "failed": "failed (use --retry-failed)"}.get(state, f"{state} elsewhere")
            result.skipped.setdefault(reason, []).append(run.run_id)
    return result


def _needs_eval(grid_dir: Path, run_id: str) -> bool:
    from kgvlp.ablation.runner import eval_hash
    folder = run_dir(grid_dir, run_id)
    spec = read_json(folder / "run.json")
    return bool(spec.get("eval", {}).get("enabled")) and \
        read_json(folder / "results.json").get("eval_hash") != eval_hash(spec["eval"])


def resolve_resources(grid: Grid, **cli) -> Resources:
    """The grid file's resources with command-line values (those not None) on top."""
    values = dataclasses.asdict(grid.spec.resources)
    values.update({k: v for k, v in cli.items() if v is not None})
    return Resources(**values)


def launch(grid: Grid, grid_dir: Path | None = None, executor: str = "local", retry_failed: bool = False,
           resources: Resources | None = None, view: bool = True, wait: bool = True,
           ray_address: str | None = None, command: list[str] | None = None, console=None) -> dict:
    """Prepare the grid folder, run what needs running, collect results. Returns
    {"grid_dir", "plan", "outcome": {run_id: state}}."""
    from rich.console import Console
    from kgvlp.ablation.view import ProgressView
    grid_dir = Path(grid_dir or grid.default_dir())
    resources = resources or grid.spec.resources
    console = console or Console(stderr=True, width=200)
    prepare(grid, grid_dir)
    todo = plan(grid, grid_dir, retry_failed)
    for reason, ids in todo.skipped.items():
        console.print(f"skipping {len(ids)} run(s): {reason}", highlight=False)
    outcome: dict[str, str] = {}
    if todo.to_run:
        console.print(f"{grid.name}: {len(todo.to_run)} of {len(grid.runs)} run(s) → {executor} executor "
                      f"(grid folder {grid_dir})", highlight=False)
        progress = ProgressView(grid_dir, todo.to_run, console) if view else None
        with progress or nullcontext(), _terminate_as_interrupt():
            if executor == "local":
                from kgvlp.ablation.executors.local import run_local
                outcome = run_local(grid_dir, todo.to_run, resources, progress, command=command)
            elif executor == "slurm":
                from kgvlp.ablation.executors.slurm import run_slurm
                outcome = run_slurm(grid, grid_dir, todo.to_run, resources, progress, wait=wait)
            elif executor == "ray":
                from kgvlp.ablation.executors.ray_tasks import run_ray
                outcome = run_ray(grid_dir, todo.to_run, resources, progress, address=ray_address,
                                  command=command)
            else:
                raise GridError(f"unknown executor {executor!r}; valid choices: local, slurm, ray")
    if wait:
        from kgvlp.ablation.results import collect
        collect(grid_dir)
    return {"grid_dir": grid_dir, "plan": todo, "outcome": outcome}


class _terminate_as_interrupt:
    """SIGTERM (a `kill`, a batch system ending the launcher) stops the runs like Ctrl-C:
    the executor terminates its workers and they stay resumable."""

    def __enter__(self):
        import signal
        import threading
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc):
        import signal
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False
