"""``kgvlp data show``: a PNG grid of cache samples with masks, boxes and report sentences.

Each finding gets one colour: its masks and boxes on the image, and the report sentences
that mention it (with "+" present, "−" negated, "?" hedged) in the same colour, so a person
can check at a glance that pictures and words agree.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from kgvlp.data.cache import ImageCache

_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffd92f", "#a65628", "#f781bf",
            "#17becf", "#bcbd22"]


def _colour(names: list[str], finding: str) -> str:
    return _COLOURS[names.index(finding) % len(_COLOURS)] if finding in names else "#999999"


def show(folder: str | Path, n: int = 8, out: str | Path = "grid.png", split: str | None = None,
         seed: int = 0) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Rectangle

    cache = ImageCache(folder)
    rows = cache.rows(split)
    rng = np.random.default_rng(seed)
    # prefer studies with findings so the picture shows something, keep one normal
    with_findings = [r for r in rows if cache.meta[r].get("instances")]
    normal = [r for r in rows if not cache.meta[r].get("instances")]
    pick = list(rng.permutation(with_findings)[: n - 1]) + list(rng.permutation(normal)[:1])
    pick = pick[:n] if pick else rows[:n]
    names = cache.label_names
    cols = 2
    fig, axes = plt.subplots((len(pick) + cols - 1) // cols, 2 * cols, figsize=(7.5 * cols, 3.9 * ((len(pick) + 1) // cols)),
                             gridspec_kw={"width_ratios": [1, 1.15] * cols}, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, row in enumerate(pick):
        meta = cache.meta[row]
        ax_img, ax_txt = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        image = cache.image(row).astype(np.float32) / 255
        rgb = np.stack([image] * 3, -1)
        for inst in meta.get("instances", []):
            colour = np.array(to_rgb(_colour(names, inst["finding"])))
            if inst.get("mask") is not None:
                mask = cache.mask(inst["mask"])
                rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
            if inst.get("box"):
                x0, y0, x1, y1 = inst["box"]
                ax_img.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, ec=colour))
        ax_img.imshow(rgb)
        ax_img.set_title(meta.get("id", str(row)), fontsize=7)
        _draw_report(ax_txt, meta, names)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _draw_report(ax, meta: dict, names: list[str]) -> None:
    from kgvlp.data.text import split_sentences
    sentences = split_sentences("\n".join(p for p in (meta.get("findings"), meta.get("impression")) if p)
                                or meta.get("report", ""))
    # which sentence each mention's first word falls in
    starts, total = [], 0
    for s in sentences:
        starts.append(total)
        total += len(s.split())
    tags: dict[int, tuple[str, str]] = {}
    for m in meta.get("mentions", []):
        if not m.get("words"):
            continue
        s_idx = max(i for i, start in enumerate(starts) if start <= m["words"][0])
        mark = "−" if m["negated"] else ("?" if m["uncertain"] else "+")
        if s_idx not in tags or mark == "+":
            tags[s_idx] = (mark, m["finding"])
    y = 0.98
    for i, sentence in enumerate(sentences):
        mark, finding = tags.get(i, (" ", ""))
        colour = _colour(names, finding) if mark != "−" else "#555555"
        for line in textwrap.wrap(f"{mark} {sentence}", 52):
            ax.text(0.0, y, line, fontsize=7, color=colour if finding else "black", va="top",
                    transform=ax.transAxes, family="monospace",
                    weight="bold" if mark in "+?" and finding else "normal")
            y -= 0.065
