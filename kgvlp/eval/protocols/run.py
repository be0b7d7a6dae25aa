"""``kgvlp eval RUN --protocol mgca|prior``: a paper's downstream protocol on the user's data.

1. Each dataset folder (published layout) → split manifests (IDs only) with content hashes,
   written to ``<out>/manifests/``.
2. The images come from a kgvlp image cache of the same folder (made with ``kgvlp data
   prepare`` on first use, under ``cache_dir``); manifest IDs are matched to cache rows by
   the readers' record IDs. IDs the cache lacks (unreadable images) are skipped and counted.
3. Each task runs on exactly the manifest's rows with the protocol's recipe where kgvlp's
   heads accept it (docs/eval.md lists what still differs), and every row and table is
   tagged with protocol, split hash, seeds, config hash and kgvlp version + commit.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from kgvlp.eval.data import EvalDataError, EvalView
from kgvlp.eval.report import TaskResult, markdown, write
from kgvlp.eval.protocols import mgca, prior
from kgvlp.eval.protocols.manifest import SplitManifest

PROTOCOLS = {"mgca": mgca, "prior": prior}
# dataset name in a protocol → the reader (kgvlp.data.readers.READERS) that caches its images
READER = {"chexpert": "chexpert", "rsna": "rsna_pneumonia", "covidx": "covidx", "siim": "siim_acr",
          "object_cxr": "object_cxr", "chexpert_5x200": "chexpert"}
TASK_OF_EVAL_TASK = {"linear_probe": "classification", "detection": "detection", "segmentation": "segmentation",
                     "zero_shot": "zero_shot"}


@dataclass
class ProtocolOptions:
    """What a run may change: seeds/fractions (None = the protocol's), epochs (None = the
    protocol's 50), and builder options for small fixtures (chexpert.valid_num,
    rsna.detection_holdout)."""
    seeds: list[int] | None = None
    fractions: list[float] | None = None
    max_epochs: int | None = None
    builder: dict[str, dict] = field(default_factory=dict)
    cache_dir: str = ".kgvlp_cache"
    cache_size: int = 256
    tasks: list[str] | None = None          # classification / detection / segmentation / zero_shot


def build_manifests(protocol: str, roots: dict[str, str | Path], options: ProtocolOptions) -> list[SplitManifest]:
    """Every manifest of ``protocol`` for the datasets in ``roots`` (name → folder)."""
    module = _protocol(protocol)
    unknown = sorted(set(roots) - set(module.BUILDERS) - ({"chexpert"} if protocol == "prior" else set()))
    if unknown:
        raise EvalDataError(f"protocol {protocol!r} has no dataset(s) {unknown}; it reports "
                            f"{', '.join(module.BUILDERS)}")
    out = []
    for name, builder in module.BUILDERS.items():
        if name not in roots:
            continue
        kwargs = {"fractions": tuple(options.fractions or getattr(module, "FRACTIONS", (1.0,))),
                  "seeds": tuple(options.seeds or getattr(module, "SEEDS", (0,))), **options.builder.get(name, {})}
        out += builder(roots[name], **kwargs)
    if options.tasks:
        out = [m for m in out if m.task in options.tasks]
    return out


def _protocol(name: str):
    if name not in PROTOCOLS:
        raise EvalDataError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# --------------------------------------------------------------------------- provenance

def provenance() -> dict:
    from kgvlp.export import git_commit, kgvlp_version
    return {"kgvlp_version": kgvlp_version(), "commit": git_commit()}


def config_hash(spec, run_config, options: dict) -> str:
    """sha256 over what fixes a number besides the splits: the task recipe, the eval options
    and the trained run's experiment config."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        return value
    body = {"spec": plain(spec), "options": options, "run_config": plain(run_config)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def tags(manifest: SplitManifest, seeds, cfg_hash: str, prov: dict) -> dict:
    return {"protocol": manifest.protocol, "split_hash": manifest.content_hash, "config_hash": cfg_hash,
            "seeds": ",".join(str(s) for s in seeds), **prov}


def tag_line(tag: dict) -> str:
    return (f"Protocol {tag['protocol']} · split manifest sha256 {tag['split_hash'][:16]} · seeds "
            f"[{tag['seeds']}] · config sha256 {tag['config_hash'][:16]} · kgvlp {tag['kgvlp_version']} "
            f"(commit {tag['commit']})")


# --------------------------------------------------------------------------- images

def _cache_for(dataset: str, root: Path, options: ProtocolOptions, progress: bool):
    """The kgvlp image cache of ``root`` (prepared on first use)."""
    from kgvlp.data.cache import ImageCache, is_cache
    if is_cache(root):
        return ImageCache(root)
    folder = Path(options.cache_dir) / f"protocol_{READER[dataset]}_{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]}"
    if not is_cache(folder):
        # its own process: ``prepare`` forks decoding workers, and a fork of a process that
        # already ran torch (a loaded model, its thread pools) can hang
        import subprocess
        import sys
        command = [sys.executable, "-m", "kgvlp.cli", "data", "prepare", READER[dataset], "--root", str(root),
                   "--out", str(folder), "--size", str(options.cache_size)]
        done = subprocess.run(command, capture_output=not progress, text=True)
        if done.returncode != 0 or not is_cache(folder):
            raise EvalDataError(f"{dataset}: cannot cache the images of {root} (`{' '.join(command[1:])}` "
                                f"exited {done.returncode}): {(done.stderr or '').strip()[-500:]}")
    return ImageCache(folder)


def _id_key(dataset: str, image_id: str) -> str:
    """CheXpert IDs are 'CheXpert-v1.0[-small]/train/…' in the CSVs, 'train/…' in PRIOR's list."""
    if dataset in ("chexpert", "chexpert_5x200"):
        parts = image_id.split("/")
        return "/".join(parts[1:]) if parts[0].lower().startswith("chexpert") else image_id
    return image_id


class ManifestRows(Dataset):
    """Items of a cache in a manifest's ID order, labels re-expressed in the protocol's classes.
    ``boxes_as_masks``: each instance's mask is its box filled (MGCA's RSNA segmentation,
    ``RSNASegmentDataset``: ``mask[y0:y1, x0:x1] = 1``)."""

    def __init__(self, cache, rows: list[int], image_size: int, relabel, label_names: list[str],
                 label_kind: str, with_masks: bool, boxes_as_masks: bool = False):
        from kgvlp.data.datasets import DownstreamDataset
        self.inner = DownstreamDataset(cache, rows, image_size, with_masks=with_masks)
        self.relabel, self.label_names, self.label_kind = relabel, label_names, label_kind
        self.boxes_as_masks = boxes_as_masks

    def __len__(self) -> int:
        return len(self.inner)

    def labels_matrix(self):
        import numpy as np
        return np.stack([self.relabel(self.inner.cache.meta[r]) for r in self.inner.rows])

    def __getitem__(self, index: int):
        item = self.inner[index]
        meta = self.inner.cache.meta[self.inner.rows[index]]
        item = dataclasses.replace(item, labels=torch.as_tensor(self.relabel(meta), dtype=torch.float32))
        return dataclasses.replace(item, masks=box_masks(item.boxes, item.image.shape[-1])) if self.boxes_as_masks else item


def box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(I, 4) xyxy pixel boxes → (I, size, size) bool masks of the filled boxes (NaN rows empty)."""
    masks = torch.zeros((len(boxes), size, size), dtype=torch.bool)
    for k, box in enumerate(boxes):
        if torch.isnan(box).any():
            continue
        x0, y0 = (max(0, int(v)) for v in box[:2].floor())
        x1, y1 = (min(size, int(v)) for v in box[2:].ceil())
        masks[k, y0:y1, x0:x1] = True
    return masks


def _relabel(dataset: str, cache, extra: dict | None = None):
    """meta → the protocol's label vector for ``dataset``."""
    names = cache.label_names
    if dataset == "chexpert":
        index = {n: i for i, n in enumerate(names)}

        def chexpert(meta):
            values = meta.get("labels") or [None] * len(names)
            return [1.0 if values[index[t]] == 1 else (1.0 if values[index[t]] == -1 and t in mgca.U_ONES else 0.0)
                    for t in mgca.COMPETITION_TASKS]
        return chexpert
    if dataset == "covidx":
        def covidx(meta):
            values = meta.get("labels") or []
            present = [names[i] for i, v in enumerate(values) if v == 1]
            out = [0.0, 0.0, 0.0]
            if present:
                out[mgca.covidx_class(present[0])] = 1.0
            return out
        return covidx
    if dataset == "chexpert_5x200":
        labels = extra or {}
        return lambda meta: labels[_id_key(dataset, meta["id"])]
    return lambda meta: [1.0 if v == 1 else 0.0 for v in (meta.get("labels") or [0.0] * len(names))]


@dataclass
class Bound:
    """A manifest bound to cache rows."""
    manifest: SplitManifest
    cache: object
    rows: dict[str, list[int]]
    missing: dict[str, int]
    position: dict[str, int]          # train ID → position in the train split's rows

    def view(self, split: str, image_size: int, relabel, label_kind: str, with_masks: bool = False,
             boxes_as_masks: bool = False) -> EvalView:
        return EvalView(ManifestRows(self.cache, self.rows[split], image_size, relabel,
                                     list(self.manifest.class_names), label_kind, with_masks, boxes_as_masks))

    def subset_positions(self, fraction: float, seed: int) -> tuple[list[int], int]:
        ids = self.manifest.subset(fraction, seed)
        found = [self.position[i] for i in ids if i in self.position]
        return found, len(ids) - len(found)


def bind(manifest: SplitManifest, cache) -> Bound:
    by_id = {_id_key(manifest.dataset, str(m["id"])): i for i, m in enumerate(cache.meta)}
    rows, missing = {}, {}
    for split, ids in manifest.splits.items():
        keys = [_id_key(manifest.dataset, i) for i in ids]
        rows[split] = [by_id[k] for k in keys if k in by_id]
        missing[split] = len(keys) - len(rows[split])
    train_ids = [i for i in manifest.splits.get("train", []) if _id_key(manifest.dataset, i) in by_id]
    return Bound(manifest, cache, rows, missing, {i: k for k, i in enumerate(train_ids)})


# --------------------------------------------------------------------------- tasks

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


def _classification(bound: Bound, ctx) -> TaskResult:
    from kgvlp.eval.features import image_features
    from kgvlp.eval.linear_probe import ProbeConfig, score_probe, train_probe
    m = bound.manifest
    spec = mgca.TASKS[(m.dataset, "classification")]
    multiclass = m.dataset == "covidx"
    relabel = _relabel(m.dataset, bound.cache)
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


def _dense(bound: Bound, ctx, task: str) -> TaskResult:
    from kgvlp.eval.detection import DetConfig, train_detector
    from kgvlp.eval.segmentation import SegConfig, train_segmenter
    m = bound.manifest
    spec = mgca.TASKS[(m.dataset, task)]
    metric = "map" if task == "detection" else "dice"
    result = TaskResult(f"{m.protocol}_{m.dataset}_{task}", m.dataset, metric)
    relabel = _relabel(m.dataset, bound.cache)
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


def _zero_shot(bound: Bound, ctx) -> TaskResult:
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_score, recall_score

    from kgvlp.eval.features import has_projections, image_features, prompt_sentences, text_embeddings
    m = bound.manifest
    result = TaskResult(f"{m.protocol}_{m.dataset}_zero_shot", m.dataset, "accuracy")
    if not all(has_projections(c.model) for c in ctx.candidates):
        return TaskResult(result.task, m.dataset, skipped="the model has no shared image–text projections")
    spec = prior.ZeroShotSpec()
    tag = ctx.tag(m, spec, {})
    relabel = _relabel(m.dataset, bound.cache, ctx.extra_labels.get(m.dataset))
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


@dataclass
class _Context:
    candidates: list
    device: torch.device
    image_size: int
    seeds: list[int]
    options: ProtocolOptions
    run_config: object
    prov: dict
    progress: bool
    extra_labels: dict = field(default_factory=dict)

    @property
    def max_epochs(self):
        return self.options.max_epochs

    def fractions(self, manifest: SplitManifest) -> list[float]:
        return sorted({s.fraction for s in manifest.subsets})

    def tag(self, manifest, spec, options: dict) -> dict:
        return tags(manifest, self.seeds, config_hash(spec, self.run_config, {**options, "image_size": self.image_size}),
                    self.prov)


def evaluate_protocol(model, protocol: str, roots: dict[str, str | Path], out_dir, options: ProtocolOptions | None = None,
                      baselines: bool = True, device=None, progress: bool = True) -> list[TaskResult]:
    """Manifests → ``<out>/manifests/*.json``; each task → ``<out>/<protocol>_<dataset>_<task>.{json,md}``;
    all tables → ``<out>/summary.md``. Returns the TaskResults."""
    from kgvlp.eval.features import pick_device
    from kgvlp.eval.loading import candidates
    options = options or ProtocolOptions()
    module = _protocol(protocol)
    roots = {k: Path(v) for k, v in roots.items()}
    if protocol == "prior" and "chexpert_5x200" in roots and "chexpert" not in roots:
        raise EvalDataError("--protocol prior needs chexpert=<CheXpert folder> for the images of 5×200 "
                            "as well as chexpert_5x200=<PRIOR's chexpert_5x200.json>")
    manifests = build_manifests(protocol, roots, options)
    out = Path(out_dir)
    for manifest in manifests:
        manifest.write(out / "manifests")
    # every cache is ready (or its layout error raised) before any model is loaded
    bound = [bind(m, _cache_for(m.dataset, roots["chexpert"] if m.dataset == "chexpert_5x200" else roots[m.dataset],
                                options, progress)) for m in manifests]
    found, run_config = candidates(model, with_baselines=baselines)
    ctx = _Context(found, pick_device(device), found[0].model.model_cfg.image.image_size,
                   list(options.seeds or getattr(module, "SEEDS", (0,))), options, run_config, provenance(), progress)
    if protocol == "prior" and "chexpert_5x200" in roots:
        entries = json.loads(Path(roots["chexpert_5x200"]).read_text()) if roots["chexpert_5x200"].is_file() else \
            json.loads((roots["chexpert_5x200"] / "chexpert_5x200.json").read_text())
        ctx.extra_labels["chexpert_5x200"] = {_id_key("chexpert_5x200", e["image_path"]): [float(v) for v in e["label"]]
                                              for e in entries.values()}
    results = []
    for item in bound:
        if item.manifest.task == "classification":
            result = _classification(item, ctx)
        elif item.manifest.task == "zero_shot":
            result = _zero_shot(item, ctx)
        else:
            result = _dense(item, ctx, item.manifest.task)
        write(result, out)
        results.append(result)
    if protocol == "prior":
        results.append(TaskResult("prior_supervised", "-", skipped=prior.NOT_RELEASED))
    index = [{"dataset": m.dataset, "task": m.task, "split_hash": m.content_hash,
              "counts": {k: len(v) for k, v in m.splits.items()}, "notes": m.notes} for m in manifests]
    (out / "manifests" / "index.json").write_text(json.dumps({"protocol": protocol, **ctx.prov, "manifests": index},
                                                             indent=1) + "\n")
    (out / "summary.md").write_text("\n".join([f"# {protocol.upper()} protocol", ""] + [markdown(r) for r in results]))
    return results
