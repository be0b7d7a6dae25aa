"""``kgvlp ablate`` (registered by kgvlp/cli.py):

    kgvlp ablate GRID.yaml [key=value …] [--executor local|slurm|ray] [--dry-run] [--retry-failed]
    kgvlp ablate status GRID.yaml|GRID_DIR
    kgvlp ablate prune GRID.yaml|GRID_DIR      move run folders the grid no longer lists to GRID_DIR/orphans/
    kgvlp ablate report GRID_DIR [--baseline axis=level] [--metric M …] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from kgvlp.ablation.executors import EXECUTORS

RESOURCE_FLAGS = {"gpus_per_run": int, "nodes_per_run": int, "cpus_per_run": int, "mem_gb": int, "time_min": int,
                  "partition": str, "account": str, "qos": str, "constraint": str, "max_requeues": int}


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``ablate`` command to the top-level ``subparsers``."""
    parser = subparsers.add_parser(
        "ablate", help="run an ablation grid (train → eval per run) locally, on SLURM or Ray; status; report",
        description="Expand a grid file (base experiment + axes of overrides) into runs and execute them. "
                    "Re-running skips finished runs and resumes interrupted ones. "
                    "`kgvlp ablate status GRID` shows the grid; `kgvlp ablate report GRID_DIR` writes the report; "
                    "`kgvlp ablate prune GRID` moves run folders the grid no longer lists to GRID_DIR/orphans/.")
    parser.add_argument("grid", metavar="GRID.yaml | status | report | prune", help="a grid file, or status/report/prune")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run (after `status`/`report`/"
                                                     "`prune`: the grid file or folder)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and the estimated cost; run nothing")
    parser.add_argument("--no-bench", action="store_true", help="--dry-run without the cost benchmark")
    parser.add_argument("--bench-steps", type=int, default=2, help="timed steps per configuration in --dry-run")
    parser.add_argument("--out", help="grid folder (default: the grid's out_dir or runs/ablations/NAME); "
                                      "for report: where report.md and plots go (default GRID_DIR/report)")
    parser.add_argument("--retry-failed", action="store_true", help="re-run failed runs too")
    parser.add_argument("-j", "--concurrent", type=int, help="runs at once (local), array parallelism (slurm), "
                                                             "tasks in flight (ray)")
    for flag, kind in RESOURCE_FLAGS.items():
        parser.add_argument("--" + flag.replace("_", "-"), type=kind, help=f"per-run resources: {flag}")
    parser.add_argument("--ray-address", help="an existing Ray cluster (`ray start --head`), e.g. auto or "
                                              "host:6379; default: a local Ray instance")
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    parser.add_argument("--baseline", help="report: the configuration others are compared with, axis=level")
    parser.add_argument("--metric", action="append", help="report: metrics to show (repeatable; default all)")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    if args.grid == "report":
        return _report(args)
    if args.grid == "status":
        return _status(args)
    if args.grid == "prune":
        return _prune(args)
    return _launch(args)


def _grid_dir_of(target: str, out: str | None) -> Path:
    path = Path(target)
    if path.is_dir():
        return path
    from kgvlp.ablation.grid import load_grid
    return Path(out) if out else load_grid(path).default_dir()


def _status(args) -> int:
    if len(args.overrides) != 1:
        print("usage: kgvlp ablate status GRID.yaml|GRID_DIR", file=sys.stderr)
        return 2
    from kgvlp.ablation.view import print_status
    grid_dir = _grid_dir_of(args.overrides[0], args.out)
    rows = print_status(grid_dir)
    return 1 if any(r["state"] == "failed" for r in rows) else 0


def _prune(args) -> int:
    if len(args.overrides) != 1:
        print("usage: kgvlp ablate prune GRID.yaml|GRID_DIR", file=sys.stderr)
        return 2
    from kgvlp.ablation.state import move_orphans
    moved = move_orphans(_grid_dir_of(args.overrides[0], args.out))
    for path in moved:
        print(f"moved {path.name} → {path}")
    print(f"{len(moved)} orphan run folder(s) moved")
    return 0


def _report(args) -> int:
    if len(args.overrides) != 1:
        print("usage: kgvlp ablate report GRID_DIR [--baseline axis=level] [--out DIR]", file=sys.stderr)
        return 2
    from kgvlp.ablation.report import write_report
    grid_dir = _grid_dir_of(args.overrides[0], None)
    path = write_report(grid_dir, args.out, baseline=args.baseline, metrics=args.metric,
                        command=_launch_history(grid_dir))
    print(path.read_text())
    print(f"report: {path}")
    return 0


def _launch_history(grid_dir: Path) -> str | None:
    path = grid_dir / "launches.jsonl"
    if not path.is_file():
        return None
    lines = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        lines.append(f"{entry['command']}    # {time.strftime('%Y-%m-%d %H:%M', time.localtime(entry['started']))}, "
                     f"wall {entry['wall_s'] / 60:.1f} min, ran {entry['ran']} run(s): {entry['outcome']}")
    return "\n".join(lines)


def _launch(args) -> int:
    from kgvlp.ablation.grid import load_grid
    from kgvlp.ablation.launch import launch, resolve_resources
    grid = load_grid(args.grid, args.overrides)
    resources = resolve_resources(grid, concurrent=args.concurrent,
                                  **{k: getattr(args, k) for k in RESOURCE_FLAGS})
    if args.dry_run:
        from kgvlp.ablation.cost import print_dry_run
        print_dry_run(grid, resources, args.executor, bench=not args.no_bench, bench_steps=args.bench_steps)
        return 0
    started = time.time()
    result = launch(grid, Path(args.out) if args.out else None, executor=args.executor,
                    retry_failed=args.retry_failed, resources=resources, wait=not args.no_wait,
                    ray_address=args.ray_address)
    grid_dir = result["grid_dir"]
    outcome = {}
    for state in result["outcome"].values():
        outcome[state] = outcome.get(state, 0) + 1
    command = "kgvlp ablate " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["ablate"] \
        else f"kgvlp ablate {args.grid} --executor {args.executor}"
    with open(grid_dir / "launches.jsonl", "a") as handle:
        handle.write(json.dumps({"command": command, "executor": args.executor, "started": started,
                                 "wall_s": time.time() - started, "ran": len(result["plan"].to_run),
                                 "outcome": outcome}) + "\n")
    from kgvlp.ablation.view import print_status
    rows = print_status(grid_dir)
    if not args.no_wait and any(r["state"] == "done" for r in rows):
        from kgvlp.ablation.report import write_report
        path = write_report(grid_dir, baseline=args.baseline, metrics=args.metric,
                            command=_launch_history(grid_dir))
        print(f"results: {grid_dir / 'results.csv'}\nreport:  {path}\n"
              f"TensorBoard (HParams): tensorboard --logdir {grid_dir / 'tensorboard'}")
    return 1 if any(r["state"] == "failed" for r in rows) else 0
