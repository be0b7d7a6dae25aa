"""Ablation grids: a base experiment × axes of overrides → runs (train → eval), executed
locally, on SLURM (submitit) or Ray, resumable, summarised over seeds. See docs/ablation.md.

    from kgvlp.ablation import load_grid, launch, write_report
    grid = load_grid("experiments/mgca_ablation.yaml")
    launch(grid, executor="local")
    write_report(grid.default_dir())
"""
from kgvlp.ablation.grid import Grid, GridError, RunSpec, load_grid
from kgvlp.ablation.launch import launch, plan, prepare
from kgvlp.ablation.report import paired_differences, summarize, write_report
from kgvlp.ablation.results import collect

__all__ = ["Grid", "GridError", "RunSpec", "load_grid", "launch", "plan", "prepare", "collect", "summarize",
           "paired_differences", "write_report"]
