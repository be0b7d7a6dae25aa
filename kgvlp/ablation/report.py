"""``kgvlp ablate report GRID_DIR``: mean ± std over seeds per configuration, each
configuration's difference to a baseline with a paired t-test over seeds, and plots.

A configuration is one combination of the grid's axes other than the seed axis; seeds
pair up by their seed-axis level (the same training seed in both configurations).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from kgvlp.ablation.state import read_json, run_dir


def config_label(levels: dict[str, str], config_axes: list[str]) -> str:
    if len(config_axes) == 1:
        return str(levels[config_axes[0]])
    return ", ".join(f"{a}={levels[a]}" for a in config_axes) or "all"


def _with_config(frame, config_axes: list[str]):
    frame = frame.copy()
    frame["config"] = [config_label(dict(zip(config_axes, values)), config_axes)
                       for values in frame[config_axes].astype(str).itertuples(index=False)] \
        if config_axes else "all"
    return frame


def summarize(frame, config_axes: list[str]):
    """Per (config, metric): mean, std (sample, ddof=1; 0 for one seed) and n over seeds."""
    frame = _with_config(frame, config_axes)
    stats = frame.groupby(["config", "metric"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats.rename(columns={"count": "n"})


def paired_differences(frame, config_axes: list[str], seed_axis: str | None, baseline: str):
    """Per (config ≠ baseline, metric): mean and std of config − baseline over the seeds both
    have, and scipy.stats.ttest_rel's t and two-sided p (NaN with fewer than 2 pairs)."""
    import pandas as pd
    from scipy.stats import ttest_rel
    frame = _with_config(frame, config_axes)
    key = seed_axis or "run_id"
    base = frame[frame.config == baseline].set_index(["metric", key])["value"]
    rows = []
    for (config, metric), group in frame[frame.config != baseline].groupby(["config", "metric"], sort=False):
        values = group.set_index(key)["value"]
        seeds = [s for s in values.index if (metric, s) in base.index]
        ours = [float(values[s]) for s in seeds]
        theirs = [float(base[(metric, s)]) for s in seeds]
        diffs = [a - b for a, b in zip(ours, theirs)]
        t, p = float("nan"), float("nan")
        if len(diffs) >= 2 and any(d != diffs[0] for d in diffs):
            test = ttest_rel(ours, theirs)
            t, p = float(test.statistic), float(test.pvalue)
        n = len(diffs)
        mean = sum(diffs) / n if n else float("nan")
        std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else float("nan")
        rows.append({"config": config, "metric": metric, "n": n, "diff_mean": mean, "diff_std": std,
                     "t": t, "p": p})
    return pd.DataFrame(rows, columns=["config", "metric", "n", "diff_mean", "diff_std", "t", "p"])


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0 or mean != mean:
        return "–"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "")


def _p(p: float) -> str:
    return "–" if p != p else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("%", "pct")).strip("_")


def _order(frame, config_axes: list[str], meta: dict) -> list[str]:
    """Configurations in the order their runs appear in the grid."""
    seen = []
    for run in meta.get("runs", []):
        label = config_label({a: str(run["axes"][a]) for a in config_axes}, config_axes) if config_axes else "all"
        if label not in seen:
            seen.append(label)
    return seen


def write_report(grid_dir: str | Path, out_dir: str | Path | None = None, baseline=None,
                 metrics: list[str] | None = None, command: str | None = None) -> Path:
    """Markdown + PNGs under ``out_dir`` (default GRID_DIR/report). Returns report.md."""
    from kgvlp.ablation.grid import level_label
    from kgvlp.ablation.results import load_results
    grid_dir = Path(grid_dir)
    meta = read_json(grid_dir / "grid.json")
    if not meta:
        raise FileNotFoundError(f"{grid_dir} is not a grid folder (no grid.json); run `kgvlp ablate GRID.yaml` first")
    out = Path(out_dir) if out_dir else grid_dir / "report"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    config_axes, seed_axis = meta["config_axes"], meta.get("seed_axis")
    frame = load_results(grid_dir)
    if frame.empty:
        raise ValueError(f"{grid_dir}: no finished run has results yet")
    frame = frame[frame.state == "done"]
    metrics = metrics or meta.get("metrics") or sorted(dict.fromkeys(frame.metric),
                                                       key=lambda m: (m.startswith("train/"), m))
    frame = frame[frame.metric.isin(metrics)]
    order = [c for c in _order(frame, config_axes, meta)]
    stats = summarize(frame, config_axes)
    baseline = baseline if baseline is not None else meta.get("baseline")
    base_label = None
    if baseline is not None:
        if isinstance(baseline, str) and "=" in baseline:
            baseline = dict(part.split("=", 1) for part in baseline.split(","))
        levels = baseline if isinstance(baseline, dict) else {config_axes[0]: baseline}
        base_label = config_label({a: level_label(levels[a]) for a in config_axes}, config_axes)
    elif order:
        base_label = order[0]
    lines = [f"# Ablation report: {meta['name']}", ""]
    if command:
        lines += ["Produced by:", "", "```", command, "```", ""]
    seeds = sorted({str(s) for s in frame[seed_axis]}) if seed_axis and seed_axis in frame else []
    lines += [f"{frame.run_id.nunique()} finished runs; configurations over "
              f"{', '.join(config_axes) or '(none)'}" + (f"; seeds ({seed_axis}): {', '.join(seeds)}" if seeds else "")
              + ". Values: mean ± sample std over seeds (n in brackets when a seed is missing).", ""]
    lines += _mean_table(stats, order, metrics)
    if base_label is not None and base_label in order and len(order) > 1:
        diffs = paired_differences(frame, config_axes, seed_axis, base_label)
        lines += ["", f"## Difference to {base_label} (paired t-test over seeds, scipy.stats.ttest_rel)", "",
                  "Δ = configuration − baseline, mean ± std over the seeds both have; p two-sided.", ""]
        lines += _diff_table(diffs, [c for c in order if c != base_label], metrics)
        diffs.to_csv(out / "differences.csv", index=False)
    stats.to_csv(out / "summary.csv", index=False)
    plots = _bar_charts(frame, stats, order, metrics, config_axes, out / "plots")
    curves = _loss_curves(grid_dir, meta, config_axes, order, out / "plots" / "loss_curves.png")
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots + ([curves] if curves else [])]
    missing = [r for r in meta.get("runs", []) if r["run_id"] not in set(frame.run_id)]
    if missing:
        lines += ["", "## Runs without results", ""]
        lines += [f"- {r['run_id']} ({', '.join(f'{k}={v}' for k, v in r['axes'].items())}): "
                  f"{read_json(run_dir(grid_dir, r['run_id']) / 'status.json').get('state', 'pending')}"
                  for r in missing]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _mean_table(stats, order: list[str], metrics: list[str]) -> list[str]:
    lines = ["| metric | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
    cells = {(r.config, r.metric): (r.mean, r.std, int(r.n)) for r in stats.itertuples()}
    max_n = max((n for _, _, n in cells.values()), default=0)
    for metric in metrics:
        row = []
        for config in order:
            mean, std, n = cells.get((config, metric), (float("nan"), 0.0, 0))
            row.append(_cell(mean, std, n) + (f" (n={n})" if 0 < n < max_n else ""))
        lines.append(f"| {metric} | " + " | ".join(row) + " |")
    return lines


def _diff_table(diffs, configs: list[str], metrics: list[str]) -> list[str]:
    cells = {(r.config, r.metric): r for r in diffs.itertuples()}
    lines = ["| metric | " + " | ".join(f"Δ {c} | p" for c in configs) + " |",
             "|---|" + "---|---|" * len(configs)]
    for metric in metrics:
        if not any((c, metric) in cells and cells[(c, metric)].n for c in configs):
            continue
        row = []
        for config in configs:
            r = cells.get((config, metric))
            if r is None or r.n == 0:
                row += ["–", "–"]
            else:
                sign = "+" if r.diff_mean >= 0 else ""
                row += [f"{sign}{r.diff_mean:.3f}" + (f" ± {r.diff_std:.3f}" if r.n > 1 else ""), _p(r.p)]
        lines.append(f"| {metric} | " + " | ".join(row) + " |")
    return lines


def _bar_charts(frame, stats, order, metrics, config_axes, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    framed = _with_config(frame, config_axes)
    for metric in metrics:
        sub = stats[stats.metric == metric].set_index("config")
        configs = [c for c in order if c in sub.index]
        if not configs:
            continue
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(configs), 3.6))
        x = list(range(len(configs)))
        ax.bar(x, [sub.loc[c, "mean"] for c in configs], yerr=[sub.loc[c, "std"] for c in configs],
               capsize=5, color="#8fb3d9", edgecolor="#2b5d8a")
        for i, config in enumerate(configs):   # the seeds themselves
            points = framed[(framed.config == config) & (framed.metric == metric)]["value"]
            ax.scatter([i] * len(points), points, color="black", s=12, zorder=3)
        ax.set_xticks(x, configs, rotation=20 if len(configs) > 3 else 0, ha="right" if len(configs) > 3 else "center")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} (mean ± std over seeds; dots = seeds)", fontsize=9)
        lo = min(framed[framed.metric == metric]["value"].min(), (sub["mean"] - sub["std"]).min())
        hi = max(framed[framed.metric == metric]["value"].max(), (sub["mean"] + sub["std"]).max())
        pad = (hi - lo) * 0.25 or abs(hi) * 0.05 or 0.05
        ax.set_ylim(lo - pad, hi + pad)
        fig.tight_layout()
        path = out / f"bar_{_slug(metric)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _loss_curves(grid_dir: Path, meta: dict, config_axes: list[str], order: list[str], path: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from kgvlp.ablation.results import loss_curve
    curves: dict[str, list[dict[int, float]]] = {}
    for run in meta.get("runs", []):
        steps, values = loss_curve(run_dir(grid_dir, run["run_id"]))
        if steps:
            label = config_label({a: str(run["axes"][a]) for a in config_axes}, config_axes) if config_axes else "all"
            curves.setdefault(label, []).append(dict(zip(steps, values)))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label in [c for c in order if c in curves]:
        runs = curves[label]
        steps = sorted(set.intersection(*(set(r) for r in runs)))
        values = np.array([[r[s] for s in steps] for r in runs])
        mean, std = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
        ax.plot(steps, mean, label=f"{label} (n={len(runs)})")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss/total")
    ax.set_title("Training loss per configuration (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
