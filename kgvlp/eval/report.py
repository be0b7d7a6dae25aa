"""Results of one task: rows of numbers → JSON and a Markdown table with mean ± std over seeds."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL_ORDER = ("trained", "start", "random")
COUNTS = frozenset({"classes_scored", "mentions", "train_size", "epochs", "best_epoch"})  # never ×100


@dataclass
class TaskResult:
    """``rows``: one dict per (model, fraction, seed) with every metric the task computed;
    ``metric``: the headline metric the table shows; ``skipped``: why the task did not run."""
    task: str
    data: str
    metric: str = ""
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def values(self, model: str, metric: str | None = None, fraction=None) -> list[float]:
        metric = metric or self.metric
        return [r[metric] for r in self.rows if r["model"] == model and r.get("fraction") == fraction
                and metric in r and not _isnan(r[metric])]

    def summary(self) -> dict:
        """{model: {fraction_key: {metric: {mean, std, n}}}}."""
        out: dict = {}
        for row in self.rows:
            key = "all" if row.get("fraction") is None else f"{row['fraction']:g}"
            slot = out.setdefault(row["model"], {}).setdefault(key, {})
            for metric, value in row.items():
                if metric in ("model", "fraction", "seed") or not isinstance(value, (int, float)):
                    continue
                slot.setdefault(metric, []).append(value)
        for model in out.values():
            for key, metrics in model.items():
                model[key] = {m: _stats(v) for m, v in metrics.items()}
        return out


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if not _isnan(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "n": len(finite)}


def _cell(stats: dict, scale: float, metric: str = "") -> str:
    if stats["n"] == 0:
        return "–"
    if metric in COUNTS:
        return f"{stats['mean']:g}"
    text = f"{stats['mean'] * scale:.1f}"
    return text + (f" ± {stats['std'] * scale:.1f}" if stats["n"] > 1 else "")


def markdown(result: TaskResult, percent: bool = True) -> str:
    """One table: models down, fractions (or metrics, for tasks without fractions) across."""
    title = f"### {result.task} — {result.data}"
    if result.skipped:
        return f"{title}\n\nSkipped: {result.skipped}\n"
    summary = result.summary()
    models = [m for m in MODEL_ORDER if m in summary] + [m for m in summary if m not in MODEL_ORDER]
    keys = sorted({k for m in summary.values() for k in m}, key=lambda k: (k == "all", float(k) if k != "all" else 0))
    scale = 100.0 if percent else 1.0
    if keys == ["all"]:
        metrics = [m for m in summary[models[0]]["all"] if m != "n"] if models else []
        header = ["model", *metrics]
        lines = [[m, *(_cell(summary[m]["all"].get(x, {"n": 0}), scale, x) for x in metrics)] for m in models]
    else:
        header = ["model", *(f"{result.metric} @ {float(k) * 100:g}%" for k in keys)]
        lines = [[m, *(_cell(summary[m].get(k, {}).get(result.metric, {"n": 0}), scale) for k in keys)]
                 for m in models]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(line) + " |" for line in lines]
    if not result.rows:  # plots only
        table = []
    seeds = sorted({r.get("seed") for r in result.rows if r.get("seed") is not None})
    foot = []
    if result.rows:
        foot.append((f"Values ×100 (counts as they are), mean ± std over seeds {seeds}." if seeds
                     else "Values ×100 (counts as they are).") if percent else "")
    foot += result.notes
    return "\n".join([title, "", *table, "", *foot]) + "\n"


def write(result: TaskResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``<out>/<task>.json`` and ``<out>/<task>.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**asdict(result), "summary": result.summary()}
    json_path, md_path = out / f"{result.task}.json", out / f"{result.task}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path
