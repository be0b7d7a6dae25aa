"""One tidy results table per grid: a row per run × metric, the axes as columns.

    GRID_DIR/results.csv (+ results.parquet when pyarrow is installed)
    columns: run_id, <axis>…, state, metric, value
    GRID_DIR/tensorboard/<run_id>/   HParams (axes → metrics) and the run's loss curve
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from kgvlp.ablation.state import read_json, read_status, run_dir


def tidy_rows(grid_dir: Path) -> list[dict]:
    meta = read_json(Path(grid_dir) / "grid.json")
    rows = []
    for run in meta.get("runs", []):
        folder = run_dir(grid_dir, run["run_id"])
        results = read_json(folder / "results.json")
        state = read_status(folder).get("state", "pending")
        metrics = {**results.get("metrics", {}), **results.get("train", {})}
        for metric, value in sorted(metrics.items()):
            rows.append({"run_id": run["run_id"], **run["axes"], "state": state, "metric": metric,
                         "value": float(value)})
    return rows


def collect(grid_dir: Path, hparams: bool = True):
    """Write results.csv (and .parquet) and the TensorBoard HParams; returns the DataFrame."""
    import pandas as pd
    grid_dir = Path(grid_dir)
    meta = read_json(grid_dir / "grid.json")
    frame = pd.DataFrame(tidy_rows(grid_dir), columns=["run_id", *meta.get("axes", []), "state", "metric", "value"])
    frame.to_csv(grid_dir / "results.csv", index=False)
    try:
        import pyarrow  # noqa: F401
        frame.to_parquet(grid_dir / "results.parquet", index=False)
    except ImportError:
        pass
    if hparams and not frame.empty:
        write_hparams(grid_dir, frame, meta)
    return frame


def load_results(grid_dir: Path):
    """The tidy table of a grid folder (re-collected from the run folders)."""
    return collect(Path(grid_dir), hparams=False)


def write_hparams(grid_dir: Path, frame, meta: dict) -> None:
    """TensorBoard HParams: one log dir per finished run, axes as hparams, its metrics,
    and its training loss curve (from metrics.jsonl) as scalars beside them."""
    from torch.utils.tensorboard import SummaryWriter
    root = Path(grid_dir) / "tensorboard"
    for run in meta.get("runs", []):
        values = frame[frame.run_id == run["run_id"]]
        if values.empty:
            continue
        target = root / run["run_id"]
        shutil.rmtree(target, ignore_errors=True)
        with SummaryWriter(str(target)) as writer:
            writer.add_hparams({k: str(v) for k, v in run["axes"].items()},
                               {f"hparam/{m}": v for m, v in zip(values.metric, values.value)}, run_name=".")
            for row in _metrics_rows(run_dir(grid_dir, run["run_id"])):
                for key in ("loss/total",):
                    if key in row:
                        writer.add_scalar(key, row[key], row["step"])


def _metrics_rows(folder: Path) -> list[dict]:
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def loss_curve(folder: Path, key: str = "loss/total") -> tuple[list[int], list[float]]:
    """Steps and values of ``key``; a resumed run's repeated steps keep the last value."""
    by_step = {row["step"]: row[key] for row in _metrics_rows(folder) if key in row}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]
