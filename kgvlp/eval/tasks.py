"""Each task: compare the trained model with its baselines, run the same way, → TaskResult.

A task receives an ``EvalContext`` (the candidate models, the three splits, fractions,
seeds, device, output folder, per-task options) and either returns rows of metrics or a
result whose ``skipped`` says why it cannot run on this model or dataset.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from kgvlp.progress import track

from kgvlp.eval.data import EvalView, capabilities, label_fraction
from kgvlp.eval.detection import DetConfig, train_detector
from kgvlp.eval.features import ImageFeatures, has_projections, image_features, text_embeddings
from kgvlp.eval.grounding import map_sources, pointing_game
from kgvlp.eval.linear_probe import ProbeConfig, linear_probe
from kgvlp.eval.loading import Candidate
from kgvlp.eval.report import TaskResult
from kgvlp.eval.segmentation import SegConfig, train_segmenter
from kgvlp.eval import plots, zero_shot as zs


@dataclass
class EvalContext:
    candidates: list[Candidate]
    splits: dict[str, EvalView]
    data_name: str
    out_dir: Path
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: torch.device = torch.device("cpu")
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    det: DetConfig = field(default_factory=DetConfig)
    negated_prompts: bool = True
    progress: bool = True
    # findings the trained model never read in a report (its data.synth.omit_from_reports):
    # zero-shot scores them apart (auroc_held_out)
    held_out: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict)

    @property
    def label_names(self) -> list[str]:
        return self.splits["test"].label_names

    @property
    def multiclass(self) -> bool:
        return self.splits["test"].label_kind == "multiclass"

    def features(self, candidate: Candidate, split: str) -> ImageFeatures:
        """Image features of one split, extracted once per model and reused by every task."""
        key = (candidate.name, split)
        if key not in self._cache:
            self._cache[key] = image_features(candidate.model, self.splits[split], self.device,
                                              desc=f"{candidate.name}/{split}", progress=self.progress)
        return self._cache[key]

    def runs(self, desc: str):
        """(candidate, fraction, seed) triples with a progress bar."""
        triples = [(c, f, s) for c in self.candidates for f in self.fractions for s in self.seeds]
        return track(triples, desc, enabled=self.progress, transient=False)


def _image_size(ctx: EvalContext) -> int:
    return ctx.candidates[0].model.model_cfg.image.image_size


def _in_chans(ctx: EvalContext) -> int:
    return ctx.candidates[0].model.model_cfg.image.in_chans


def run_linear_probe(ctx: EvalContext) -> TaskResult:
    metric = "accuracy" if ctx.multiclass else "auroc"
    result = TaskResult("linear_probe", ctx.data_name, metric)
    for candidate, fraction, seed in ctx.runs("linear probe"):
        train, val, test = (ctx.features(candidate, s) for s in ("train", "val", "test"))
        metrics = linear_probe(train, val, test, fraction, seed, ctx.multiclass, ctx.probe, ctx.device)
        result.rows.append({"model": candidate.name, "fraction": fraction, "seed": seed, **metrics})
    result.notes.append("Frozen backbone global vector, one Linear (AdamW 5e-4, wd 1e-6, batch 48, "
                        f"≤ {ctx.probe.max_epochs} epochs, early stopping on val loss, patience "
                        f"{ctx.probe.patience}); each seed draws its own labelled subset.")
    return result


def _needs_shared_space(ctx: EvalContext, task: str) -> TaskResult | None:
    if not all(has_projections(c.model) for c in ctx.candidates):
        return TaskResult(task, ctx.data_name, skipped="the model has no shared image–text "
                          "projections (train with a global alignment objective such as 'ita')")
    if task == "retrieval" and not capabilities(ctx.splits["test"]).reports:
        return TaskResult(task, ctx.data_name, skipped="the dataset's items carry no report text")
    return None


def run_zero_shot(ctx: EvalContext) -> TaskResult:
    metric = "accuracy" if ctx.multiclass else "auroc"
    skipped = _needs_shared_space(ctx, "zero_shot")
    if skipped:
        return skipped
    result = TaskResult("zero_shot", ctx.data_name, metric)
    for candidate in track(ctx.candidates, "zero-shot", enabled=ctx.progress, transient=False):
        embed = lambda reports, m=candidate.model: text_embeddings(m, reports, ctx.device, progress=False)  # noqa: E731
        positive = zs.class_embeddings(embed, ctx.label_names, zs.POSITIVE_TEMPLATES)
        negative = zs.class_embeddings(embed, ctx.label_names, zs.NEGATED_TEMPLATES) if ctx.negated_prompts else None
        test = ctx.features(candidate, "test")
        metrics = zs.zero_shot_metrics(zs.zero_shot_scores(test.embed, positive, negative), test.labels, ctx.multiclass,
                                       ctx.label_names, ctx.held_out)
        result.rows.append({"model": candidate.name, **metrics})
    result.notes.append("Prompts: " + ", ".join(repr(t) for t in zs.POSITIVE_TEMPLATES)
                        + ("; scored as margin over negated prompts " + ", ".join(repr(t) for t in zs.NEGATED_TEMPLATES)
                           if ctx.negated_prompts else ""))
    return result


def run_retrieval(ctx: EvalContext) -> TaskResult:
    skipped = _needs_shared_space(ctx, "retrieval")
    if skipped:
        return skipped
    test_split = ctx.splits["test"]
    reports = [test_split[i].sentences for i in range(len(test_split))]
    positives = zs.report_positives(reports)
    result = TaskResult("retrieval", ctx.data_name, "i2t_R@1")
    for candidate in track(ctx.candidates, "retrieval", enabled=ctx.progress, transient=False):
        text = text_embeddings(candidate.model, reports, ctx.device, progress=False)
        metrics = zs.retrieval_metrics(ctx.features(candidate, "test").embed, text, positives)
        result.rows.append({"model": candidate.name, **metrics})
    result.notes.append(f"{len(reports)} test image–report pairs; a report with identical text counts as correct.")
    return result


def run_grounding(ctx: EvalContext) -> TaskResult:
    caps = capabilities(ctx.splits["test"])
    if not (caps.masks and caps.reports and caps.mentions):
        return TaskResult("grounding", ctx.data_name, skipped="needs report mentions with instance "
                          "masks (SynthCXR); this dataset has none")
    sources = {c.name: map_sources(c.model) for c in ctx.candidates}
    if not all(sources.values()):
        return TaskResult("grounding", ctx.data_name, skipped="the model has no word→patch map: no 'cta' "
                          "objective, no shared projections and no image/text tokens of one width")
    result = TaskResult("grounding", ctx.data_name, "pointing_game")
    test = ctx.splits["test"]
    for candidate in track(ctx.candidates, "grounding", enabled=ctx.progress, transient=False):
        row = {"model": candidate.name}
        for source in sources[candidate.name]:
            metrics, maps = pointing_game(candidate.model, test, ctx.device, progress=ctx.progress, source=source)
            row[f"pointing_game_{source}"] = metrics["pointing_game"]
            if "pointing_game" not in row:   # the model's own map: CTA's where trained, else similarity
                row.update({**metrics, "map": source})
            if maps:
                images = [test[m.sample].image for m in maps]
                name = "attention" if source == "cta" else "similarity"
                plots.attention_overlays(images, maps, ctx.out_dir / f"{name}_{candidate.name}.png")
        result.rows.append(row)
    result.notes.append("Pointing game: a mention's mean word→patch map peaks on a patch overlapping the "
                        "finding's mask. pointing_game_cta: CTA's attention (models trained with CTA); "
                        "pointing_game_similarity: cosine of word and patch tokens in the shared space; "
                        "pointing_game: CTA's where trained, else the similarity map. chance = a random "
                        "patch (mask area in patches), overall and per finding (chance/<finding>).")
    return result


def run_tsne(ctx: EvalContext) -> TaskResult:
    result = TaskResult("tsne", ctx.data_name)
    for candidate in ctx.candidates:
        test = ctx.features(candidate, "test")
        vectors = test.embed if test.embed is not None else test.global_vector
        path = plots.tsne(vectors, test.labels, ctx.label_names, ctx.out_dir / f"tsne_{candidate.name}.png",
                          title=f"t-SNE of {candidate.name} image embeddings ({ctx.data_name} test)")
        result.notes.append(f"{candidate.name}: {path.name}")
    return result


def run_text_findings(ctx: EvalContext) -> TaskResult:
    """Real-report text side: the blind set's IU sentences scored from text alone (text_findings)."""
    from kgvlp.eval import text_findings as tf
    data = tf.load_text_finding_set()
    result = TaskResult("text_findings", "iu_blind_set", "auroc")
    for candidate in ctx.candidates:
        for space, head in (("encoder", False), ("shared", True)):
            if head and not has_projections(candidate.model):
                continue
            embed = lambda texts, m=candidate.model, h=head: tf.embed_texts(m, texts, ctx.device, head=h)  # noqa: E731
            scores = tf.finding_scores(embed, data.sentences, data.finding_names)
            # one table row per model and space (the table groups rows by "model")
            result.rows.append({"model": f"{candidate.name}/{space}", **tf.text_finding_metrics(scores, data)})
    result.notes.append(
        f"{len(data.sentences)} IU report sentences of the blind set; score = cos(text, "
        f"{tf.POSITIVE_TEMPLATE.format('X')!r}) − cos(text, {tf.NEGATED_TEMPLATE.format('X')!r}); AUROC of "
        f"present vs the rest (uncertain left out), macro over findings with ≥ {tf.MIN_POSITIVES} present; "
        "space encoder = text tower's report vector, shared = after the text head.")
    return result


def _dense_task(ctx: EvalContext, task: str, metric: str, needs: str, train_fn, cfg) -> TaskResult:
    caps = capabilities(ctx.splits["train"])
    if not getattr(caps, needs):
        return TaskResult(task, ctx.data_name, skipped=f"the dataset's items carry no {needs}")
    result = TaskResult(task, ctx.data_name, metric)
    for candidate, fraction, seed in ctx.runs(task):
        encoder = copy.deepcopy(candidate.model.image_encoder)  # fine-tuning must not touch the model
        train = label_fraction(ctx.splits["train"], fraction, seed)
        metrics = train_fn(encoder, train, ctx.splits["test"], len(ctx.label_names), _image_size(ctx),
                           _in_chans(ctx), seed, cfg, ctx.device, progress=ctx.progress)
        result.rows.append({"model": candidate.name, "fraction": fraction, "seed": seed, **metrics})
    result.notes.append(f"{'Fine-tuned' if cfg.finetune else 'Frozen'} encoder, {cfg.epochs} epochs.")
    return result


def run_segmentation(ctx: EvalContext) -> TaskResult:
    return _dense_task(ctx, "segmentation", "dice", "masks", train_segmenter, ctx.seg)


def run_detection(ctx: EvalContext) -> TaskResult:
    return _dense_task(ctx, "detection", "map", "boxes", train_detector, ctx.det)


TASKS = {
    "linear_probe": run_linear_probe,
    "zero_shot": run_zero_shot,
    "retrieval": run_retrieval,
    "grounding": run_grounding,
    "segmentation": run_segmentation,
    "detection": run_detection,
    "tsne": run_tsne,
    "text_findings": run_text_findings,
}
TEXT_ONLY_TASKS = frozenset({"text_findings"})  # need no image dataset
SUITES = {
    "default": ("linear_probe", "zero_shot", "retrieval", "grounding", "tsne"),
    "full": tuple(TASKS),
    "probe": ("linear_probe",),
    "text": ("text_findings",),
}
