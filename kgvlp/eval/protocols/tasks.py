"""The protocol tasks: classification (linear probe), detection, segmentation, zero-shot,
each on exactly a manifest's rows, each row tagged (provenance.py)."""
from __future__ import annotations

import copy
import dataclasses

import torch
from torch.utils.data import Subset

from kgvlp.eval.protocols import mgca, prior
from kgvlp.eval.protocols.binding import Bound, relabel_for
from kgvlp.eval.protocols.provenance import tag_line
from kgvlp.eval.report import TaskResult


def _labelled_subsets(bound: Bound, ctx, result: TaskResult, model_name: str):
    """(fraction, seed, train positions) of every run; an empty subset is noted and not run."""
    for fraction in ctx.fractions(bound.manifest):
        for seed in ctx.seeds:
            rows, lost = bound.subset_positions(fraction, seed)
            if lost:
                result.notes.append(f"{model_name} @ {fraction:g}, seed {seed}: {lost} labelled IDs without a "
                                    "cached image, skipped")
            if not rows:
                result.notes.append(f"{model_name} @ {fraction:g}, seed {seed}: empty labelled subset, not run")
                continue
            yield fraction, seed, rows


def classification(bound: Bound, ctx) -> TaskResult:
    from kgvlp.eval.features import image_features
    from kgvlp.eval.linear_probe import ProbeConfig, score_probe, train_probe
    m = bound.manifest
    spec = mgca.TASKS[(m.dataset, "classification")]
    multiclass = m.dataset == "covidx"
    relabel = relabel_for(m.dataset, bound.cache)
    result = TaskResult(f"{m.protocol}_{m.dataset}_classification", m.dataset,
                        "accuracy" if multiclass else "auroc")
    cfg = ProbeConfig(lr=spec.lr[1.0], weight_decay=spec.weight_decay, batch_size=spec.batch_size[1.0],
                      max_epochs=ctx.max_epochs or spec.max_epochs, patience=10, standardize=False,
                      min_steps_per_epoch=1)
    tag = ctx.tag(m, spec, {"probe": dataclasses.asdict(cfg)})
    for candidate in ctx.candidates:
        feats = {s: image_features(candidate.model, bound.view(s, ctx.image_size, relabel,
                                                               "multiclass" if multiclass else "multilabel"),
                                   ctx.device, desc=f"{candidate.name}/{m.dataset}/{s}", progress=ctx.progress)
                 for s in ("train", "val", "test")}
        for fraction, seed, rows in _labelled_subsets(bound, ctx, result, candidate.name):
            index = torch.as_tensor(rows)
            probe, info = train_probe(feats["train"].global_vector[index], feats["train"].labels[index],
                                      feats["val"].global_vector, feats["val"].labels, multiclass, seed, cfg,
                                      ctx.device)
            metrics = score_probe(probe, feats["test"].global_vector, feats["test"].labels, multiclass)
            result.rows.append({"model": candidate.name, "fraction": fraction, "seed": seed, **metrics,
                                "train_size": len(rows), **info, **tag})
    result.notes.append(f"{spec.head}; AdamW lr {cfg.lr:g}, wd {cfg.weight_decay:g}, batch {cfg.batch_size}, "
                        f"≤ {cfg.max_epochs} epochs, early stopping on val loss (patience 10); {spec.metric}.")
    return _finish(result, bound, tag)


def dense(bound: Bound, ctx, task: str) -> TaskResult:
    from kgvlp.eval.detection import DetConfig, train_detector
    from kgvlp.eval.segmentation import SegConfig, train_segmenter
    m = bound.manifest
    spec = mgca.TASKS[(m.dataset, task)]
    metric = "map" if task == "detection" else "dice"
    result = TaskResult(f"{m.protocol}_{m.dataset}_{task}", m.dataset, metric)
    relabel = relabel_for(m.dataset, bound.cache)
    painted = task == "segmentation" and m.dataset == "rsna"
    views = {s: bound.view(s, ctx.image_size, relabel, "multilabel", with_masks=task == "segmentation",
                           boxes_as_masks=painted) for s in ("train", "test")}
    needed = "box" if task == "detection" or painted else "mask"
    if not any(i.get(needed) is not None for r in bound.rows["train"] for i in bound.cache.meta[r].get("instances", [])):
        return TaskResult(result.task, m.dataset, skipped=f"no train image of {m.dataset}'s cache has an instance {needed}")
    epochs = ctx.max_epochs or spec.max_epochs
    tag = ctx.tag(m, spec, {"epochs": epochs})
    train_fn = train_detector if task == "detection" else train_segmenter
    for candidate in ctx.candidates:
        for fraction, seed, rows in _labelled_subsets(bound, ctx, result, candidate.name):
            cfg = (DetConfig if task == "detection" else SegConfig)(
                epochs=epochs, lr=spec.lr[fraction], batch_size=spec.batch_size[fraction])
            encoder = copy.deepcopy(candidate.model.image_encoder)   # fine-tuning must not touch the model
            metrics = train_fn(encoder, Subset(views["train"], rows), views["test"], len(m.class_names),
                               ctx.image_size, candidate.model.model_cfg.image.in_chans, seed, cfg, ctx.device,
                               progress=ctx.progress)
            result.rows.append({"model": candidate.name, "fraction": fraction, "seed": seed, **metrics,
                                "train_size": len(rows), **tag})
    result.notes.append(f"Official head: {spec.head}; kgvlp's {task} head instead (docs/eval.md). "
                        f"lr {spec.lr}, batch {spec.batch_size} by fraction, {epochs} epochs, frozen encoder; "
                        f"official metric: {spec.metric}.")
    return _finish(result, bound, tag)


def zero_shot(bound: Bound, ctx) -> TaskResult:
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_score, recall_score

    from kgvlp.eval.features import has_projections, image_features, prompt_sentences, text_embeddings
    m = bound.manifest
    result = TaskResult(f"{m.protocol}_{m.dataset}_zero_shot", m.dataset, "accuracy")
    if not all(has_projections(c.model) for c in ctx.candidates):
        return TaskResult(result.task, m.dataset, skipped="the model has no shared image–text projections")
    spec = prior.ZeroShotSpec()
    tag = ctx.tag(m, spec, {})
    relabel = relabel_for(m.dataset, bound.cache, ctx.extra_labels.get(m.dataset))
    view = bound.view("test", ctx.image_size, relabel, "multiclass")
    prompts = [prompt_sentences(spec.prompts.format(t)) for t in m.class_names]
    for candidate in ctx.candidates:
        feats = image_features(candidate.model, view, ctx.device, desc=f"{candidate.name}/{m.dataset}",
                               progress=ctx.progress)
        text = torch.nn.functional.normalize(text_embeddings(candidate.model, prompts, ctx.device, progress=False), dim=-1)
        predicted = (torch.nn.functional.normalize(feats.embed, dim=-1) @ text.T).argmax(dim=1).numpy()
        truth = feats.labels.argmax(dim=1).numpy()
        result.rows.append({
            "model": candidate.name, "accuracy": float(accuracy_score(truth, predicted)),
            "precision": float(precision_score(truth, predicted, average="macro", zero_division=0)),
            "recall": float(recall_score(truth, predicted, average="macro", zero_division=0)),
            "f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "kappa": float(cohen_kappa_score(truth, predicted)), **tag})
    result.notes.append(f"Prompts '{spec.prompts}' (one per class), argmax of the global cosine; PRIOR adds "
                        "0.5·softmax of its local attention, which kgvlp does not reproduce.")
    return _finish(result, bound, tag)


def _finish(result: TaskResult, bound: Bound, tag: dict) -> TaskResult:
    lost = {s: n for s, n in bound.missing.items() if n}
    if lost:
        result.notes.append(f"Manifest IDs without a cached image (skipped, counted): {lost}")
    result.notes.append(tag_line(tag))
    return result
