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

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kgvlp.eval.data import EvalDataError
from kgvlp.eval.protocols import mgca, prior, tasks
from kgvlp.eval.protocols.binding import bind, cache_for, id_key
from kgvlp.eval.protocols.manifest import SplitManifest
from kgvlp.eval.protocols.provenance import config_hash, provenance, tags
from kgvlp.eval.report import TaskResult, markdown, write

PROTOCOLS = {"mgca": mgca, "prior": prior}
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
    from kgvlp.engine.backend import pick_device
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
    bound = [bind(m, cache_for(m.dataset, roots["chexpert"] if m.dataset == "chexpert_5x200" else roots[m.dataset],
                               options.cache_dir, options.cache_size, progress)) for m in manifests]
    found, run_config = candidates(model, with_baselines=baselines)
    ctx = _Context(found, pick_device(device), found[0].model.model_cfg.image.image_size,
                   list(options.seeds or getattr(module, "SEEDS", (0,))), options, run_config, provenance(), progress)
    if protocol == "prior" and "chexpert_5x200" in roots:
        entries = json.loads(Path(roots["chexpert_5x200"]).read_text()) if roots["chexpert_5x200"].is_file() else \
            json.loads((roots["chexpert_5x200"] / "chexpert_5x200.json").read_text())
        ctx.extra_labels["chexpert_5x200"] = {id_key("chexpert_5x200", e["image_path"]): [float(v) for v in e["label"]]
                                              for e in entries.values()}
    results = []
    for item in bound:
        if item.manifest.task == "classification":
            result = tasks.classification(item, ctx)
        elif item.manifest.task == "zero_shot":
            result = tasks.zero_shot(item, ctx)
        else:
            result = tasks.dense(item, ctx, item.manifest.task)
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
