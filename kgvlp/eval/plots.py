"""PNG figures: word→patch attention overlays (MGCA fig. 3 style) and a t-SNE of image embeddings."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt
    return plt


def attention_overlays(images: list[Tensor], maps, path: str | Path, columns: int = 4) -> Path:
    """One panel per mention: the radiograph, its upsampled attention as a heat map, the
    finding's mask outline, and the mention's words (✓/✗ = pointing-game hit/miss).
    ``images[i]`` is the (C, S, S) image of ``maps[i]``."""
    plt = _pyplot()
    rows = max(1, -(-len(maps) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, mention in zip(axes.flat, images, maps):
        size = image.shape[-1]
        heat = F.interpolate(mention.attention[None, None].float(), size=(size, size), mode="bilinear",
                             align_corners=False)[0, 0]
        ax.imshow(image[0].float().numpy(), cmap="gray")
        ax.imshow(heat.numpy(), cmap="jet", alpha=0.4)
        ax.contour(mention.mask.float().numpy(), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{' '.join(mention.words)} {'✓' if mention.hit else '✗'}", fontsize=9)
    return _save(plt, fig, path)


def label_colours(labels: Tensor, label_names: list[str]) -> tuple[Tensor, list[str]]:
    """One colour class per image: its first positive label, or "no finding"."""
    has_any = labels.sum(dim=1) > 0
    first = labels.float().argmax(dim=1)
    classes = torch.where(has_any, first, torch.full_like(first, len(label_names)))
    return classes, [*label_names, "no finding"]


def tsne(embeddings: Tensor, labels: Tensor, label_names: list[str], path: str | Path, seed: int = 0,
         title: str = "") -> Path:
    """t-SNE (sklearn) of image embeddings coloured by label."""
    from sklearn.manifold import TSNE
    plt = _pyplot()
    points = embeddings.float().numpy()
    perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    classes, names = label_colours(labels, label_names)
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for k, name in enumerate(names):
        rows = (classes == k).numpy()
        if rows.any():
            ax.scatter(coords[rows, 0], coords[rows, 1], s=8, color=cmap(k % cmap.N), label=name)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(title or "t-SNE of image embeddings")
    ax.set_xticks([]), ax.set_yticks([])
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
