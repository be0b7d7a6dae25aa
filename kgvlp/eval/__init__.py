"""Downstream evaluation of a pretrained encoder: the numbers the papers report, in their
protocols, with random-init and starting-weights baselines run the same way.

    from kgvlp.eval import evaluate, run_suite
    evaluate("runs/demo", tasks=["linear_probe"], data="synthcxr", fractions=[0.01], seeds=[0, 1, 2])

Each task writes ``<out>/<task>.json`` and ``<out>/<task>.md``; a suite also writes
``<out>/summary.md`` (all tables) and PNG plots. See docs/eval.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from kgvlp.eval.data import EvalDataError, load_splits
from kgvlp.eval.detection import DetConfig
from kgvlp.eval.linear_probe import ProbeConfig
from kgvlp.eval.loading import CheckpointError, candidates, load_trained
from kgvlp.eval.report import TaskResult, markdown, write
from kgvlp.eval.segmentation import SegConfig
from kgvlp.eval.tasks import SUITES, TASKS, TEXT_ONLY_TASKS, EvalContext

__all__ = ["evaluate", "run_suite", "run_suite_for_run", "TASKS", "SUITES", "TaskResult", "EvalContext", "ProbeConfig",
           "SegConfig", "DetConfig", "CheckpointError", "EvalDataError"]


def _task_list(tasks, suite: str | None) -> list[str]:
    if tasks is None:
        if suite not in SUITES:
            raise ValueError(f"unknown eval suite {suite!r}; valid choices: {', '.join(SUITES)}")
        return list(SUITES[suite])
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown eval task(s) {unknown}; valid choices: {', '.join(TASKS)}")
    return tasks


def _synth_kwargs(data, config) -> dict:
    """Evaluate on the same generated SynthCXR the run trained on (its data.* settings)."""
    if data != "synthcxr" or config is None or getattr(config.data, "dataset", None) != "synthcxr":
        return {}
    d = config.data
    return {"cache_dir": d.cache_dir, "synth_n": d.synth_n, "synth_seed": d.synth_seed,
            "synth_image_size": d.synth_image_size, "synth": d.synth}


def evaluate(model, data, tasks=None, suite: str | None = "default", out_dir="eval_out",
             fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), baselines: bool = True, device=None,
             data_name: str | None = None, progress: bool = True, probe: ProbeConfig | None = None,
             seg: SegConfig | None = None, det: DetConfig | None = None, negated_prompts: bool = True,
             data_kwargs: dict | None = None) -> list[TaskResult]:
    """Evaluate ``model`` (a VLPModel, run folder or checkpoint) on ``data``: a dataset name
    or prepared folder for ``kgvlp.data.build_downstream_dataset``, a DataConfig, or
    {split: Dataset}. ``data_kwargs`` go to build_downstream_dataset (for "synthcxr" they
    default to the run's own data.synth_* settings).

    ``tasks`` (names from TASKS) overrides ``suite``. Returns one TaskResult per task and
    writes JSON, Markdown and plots under ``out_dir``.
    """
    from kgvlp.engine.backend import pick_device
    task_names = _task_list(tasks, suite)
    found, config = candidates(model, with_baselines=baselines)
    image_size = found[0].model.model_cfg.image.image_size
    if set(task_names) <= TEXT_ONLY_TASKS:  # text-only tasks read no image dataset
        splits = {}
    else:
        splits = load_splits(data, image_size, **{**_synth_kwargs(data, config), **(data_kwargs or {})})
    out = Path(out_dir)
    if data_name is None:
        data_name = data if isinstance(data, str) else getattr(data, "dataset", "dataset")
    held_out = tuple(config.data.synth.omit_from_reports) if config is not None and \
        getattr(config.data, "dataset", None) == "synthcxr" else ()
    ctx = EvalContext(candidates=found, splits=splits, out_dir=out, data_name=str(data_name), held_out=held_out,
                      fractions=[float(f) for f in fractions], seeds=[int(s) for s in seeds],
                      device=pick_device(device), probe=probe or ProbeConfig(), seg=seg or SegConfig(),
                      det=det or DetConfig(), negated_prompts=negated_prompts, progress=progress)
    results = []
    for name in task_names:
        result = TASKS[name](ctx)
        write(result, out)
        results.append(result)
    notes = [f"- {c.name}: {c.note}" for c in found]
    (out / "summary.md").write_text("\n".join([f"# Evaluation on {ctx.data_name}", "", "Models:", *notes, ""]
                                              + [markdown(r) for r in results]))
    (out / "summary.json").write_text(json.dumps(
        {r.task: {"summary": r.summary(), "skipped": r.skipped} for r in results}, indent=2, default=float) + "\n")
    return results


def run_suite(model, data_cfg, out_dir, eval_cfg=None, device=None, progress: bool = True) -> list[TaskResult]:
    """What the trainer calls at the end of training.

    ``model``: the trained VLPModel (unwrapped); ``data_cfg``: the experiment's DataConfig —
    when ``eval_cfg.data`` names the same dataset, evaluation reads the same cache/generated
    SynthCXR (its train/val/test splits, never the pretraining split); ``eval_cfg``: the
    experiment's EvalConfig (suite, fractions, seeds, max_epochs, data, baselines).
    """
    from kgvlp.config.schema import EvalConfig
    cfg = eval_cfg or EvalConfig()
    data = data_cfg if data_cfg is not None and cfg.data in (data_cfg.dataset, data_cfg.root) else cfg.data
    was_training = model.training
    try:
        return evaluate(model, data, suite=cfg.suite, out_dir=out_dir, fractions=cfg.fractions, seeds=cfg.seeds,
                        baselines=cfg.baselines, device=device, progress=progress,
                        probe=ProbeConfig(max_epochs=cfg.max_epochs), data_name=cfg.data)
    finally:
        model.train(was_training)


def run_suite_for_run(run_dir, eval_cfg=None, device=None, progress: bool = True) -> list[TaskResult]:
    """Evaluate a finished run folder with its own config's data settings → RUN/<eval.out_subdir>."""
    from kgvlp.config.schema import EvalConfig
    cfg = eval_cfg or EvalConfig()
    model, config = load_trained(run_dir)
    return run_suite(model, config.data if config is not None else None, Path(run_dir) / cfg.out_subdir,
                     cfg, device=device, progress=progress)
