"""``--dry-run``: the table of runs (what differs per run) and the estimated cost.

The estimate times a few optimizer steps of each distinct configuration (seeds cost the
same) with ``kgvlp.bench.bench_one`` on this machine, then scales by each run's step count.
It covers training only; start-up and evaluation are added as fixed allowances.
"""
from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from kgvlp.ablation.grid import Grid, Resources

STARTUP_S = 20.0      # imports, model build, data cache check: measured ~10–20 s on a laptop CPU
EVAL_ALLOWANCE_S = 30.0


@dataclass
class Estimate:
    config: str
    seconds_per_step: float
    steps: int
    run_s: float


def differing_overrides(grid: Grid) -> dict[str, list[str]]:
    """Each run's overrides that are not common to every run."""
    common = set.intersection(*(set(r.overrides) for r in grid.runs)) if grid.runs else set()
    return {r.run_id: [o for o in r.overrides if o not in common] for r in grid.runs}


def runs_table(grid: Grid) -> Table:
    table = Table(title=f"{grid.name}: {len(grid.runs)} runs (base {grid.base.name})", title_justify="left")
    for column in ["run", *(a.name for a in grid.axes), "overrides that differ"]:
        table.add_column(column, overflow="fold")
    differs = differing_overrides(grid)
    for run in grid.runs:
        table.add_row(run.run_id, *(run.axes[a.name] for a in grid.axes), " ".join(differs[run.run_id]))
    return table


def _steps(experiment) -> int:
    cfg = experiment.config
    if cfg.trainer.max_steps is not None:
        return cfg.trainer.max_steps
    if cfg.trainer.stages and all(s.steps for s in cfg.trainer.stages):
        return sum(s.steps for s in cfg.trainer.stages)
    samples = cfg.data.max_samples or cfg.data.synth_n
    return max(1, int(cfg.trainer.max_epochs * samples / (cfg.data.batch_size * cfg.trainer.grad_accum)))


def estimate(grid: Grid, bench_steps: int = 2, warmup: int = 3) -> list[tuple[str, Estimate]]:
    """(run_id, Estimate) per run; one benchmark per distinct configuration."""
    from kgvlp.bench import bench_one
    from kgvlp.config import load_experiment
    seed_keys = set()
    for axis in grid.axes:
        if axis.name == grid.seed_axis:
            seed_keys |= axis.keys
    cache: dict[tuple, float] = {}
    out = []
    for run in grid.runs:
        key = tuple(o for o in run.overrides if o.split("=", 1)[0] not in seed_keys)
        experiment = load_experiment(grid.base, run.overrides)
        if key not in cache:
            result = bench_one(grid.base, list(key), steps=bench_steps, warmup=warmup, label=run.run_id)
            cache[key] = experiment.config.data.batch_size * experiment.config.trainer.grad_accum / result.pairs_per_s
        steps = _steps(experiment)
        label = ", ".join(f"{a}={v}" for a, v in run.axes.items() if a != grid.seed_axis)
        allowance = EVAL_ALLOWANCE_S if grid.spec.eval.enabled else 0
        out.append((run.run_id, Estimate(label, cache[key], steps, STARTUP_S + steps * cache[key] + allowance)))
    return out


def print_dry_run(grid: Grid, resources: Resources, executor: str, bench: bool = True, bench_steps: int = 2,
                  console: Console | None = None) -> list[tuple[str, Estimate]]:
    console = console or Console(width=200)
    console.print(runs_table(grid))
    if not bench:
        return []
    estimates = estimate(grid, bench_steps)
    table = Table(title="estimated cost (benchmarked on this machine)", title_justify="left")
    for column in ("configuration", "s/step", "steps", "per run", "runs"):
        table.add_column(column)
    by_config: dict[str, list[Estimate]] = {}
    for _, e in estimates:
        by_config.setdefault(e.config, []).append(e)
    for config, items in by_config.items():
        table.add_row(config or "(one)", f"{items[0].seconds_per_step:.3f}", str(items[0].steps),
                      _human(items[0].run_s), str(len(items)))
    console.print(table)
    total = sum(e.run_s for _, e in estimates)
    parallel = max(1, resources.concurrent or (len(estimates) if executor != "local" else 1))
    wall = total / min(parallel, len(estimates))
    devices = max(resources.gpus_per_run, 0) * max(resources.nodes_per_run, 1)
    unit = f"{total * devices / 3600:.2f} GPU-hours" if devices else f"{total / 3600:.2f} run-hours (CPU)"
    console.print(f"total {unit}; wall ≈ {_human(wall)} at {min(parallel, len(estimates))} concurrent run(s) "
                  f"({executor}); includes {STARTUP_S:.0f} s start-up and "
                  f"{EVAL_ALLOWANCE_S if grid.spec.eval.enabled else 0:.0f} s evaluation allowance per run",
                  highlight=False)
    return estimates


def _human(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
