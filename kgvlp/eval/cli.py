"""``kgvlp eval RUN_OR_CHECKPOINT --task TASK --data DATASET …`` (registered by kgvlp/cli.py)."""
from __future__ import annotations

import argparse
import sys

from kgvlp.eval.detection import DetConfig
from kgvlp.eval.linear_probe import ProbeConfig
from kgvlp.eval.segmentation import SegConfig
from kgvlp.eval.tasks import SUITES, TASKS


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` command to the top-level ``subparsers``."""
    parser = subparsers.add_parser(
        "eval", help="evaluate a trained image encoder (linear probe, zero-shot, retrieval, "
                     "segmentation, detection, grounding) against random-init and start baselines",
        description="Evaluate a run folder or checkpoint. Writes <out>/<task>.json, <task>.md, "
                    "summary.md and PNG plots.")
    parser.add_argument("model", metavar="RUN_OR_CHECKPOINT",
                        help="a run folder (config.yaml + final/model.safetensors) or a checkpoint in one")
    parser.add_argument("--task", action="append", choices=sorted(TASKS),
                        help="task to run (repeatable); default: the --suite")
    parser.add_argument("--suite", default="default", choices=sorted(SUITES),
                        help="tasks to run when --task is not given: " +
                             "; ".join(f"{k} = {', '.join(v)}" for k, v in SUITES.items()))
    parser.add_argument("--data", default="synthcxr",
                        help="downstream dataset: synthcxr, or a prepared cache folder (CheXpert, RSNA, "
                             "COVIDx, SIIM-ACR, Object-CXR via `kgvlp data prepare`)")
    parser.add_argument("--fractions", type=_floats, default=[0.01, 0.1, 1.0],
                        help="label fractions, comma-separated (default 0.01,0.1,1)")
    parser.add_argument("--seeds", type=_ints, default=None,
                        help="seeds, comma-separated (default 0,1,2; with --protocol, the paper's: MGCA 42)")
    parser.add_argument("--out", default=None, help="output folder (default RUN/eval or ./eval_out)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the random-init and start baselines")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--max-epochs", type=int, default=ProbeConfig.max_epochs, help="linear probe epoch cap")
    parser.add_argument("--mgca-exact-probe", action="store_true",
                        help="linear probe exactly as MGCA: raw features, one pass per epoch "
                             "(default standardises features and takes ≥ 20 steps an epoch; docs/eval.md)")
    parser.add_argument("--dense-epochs", type=int, default=SegConfig.epochs,
                        help="epochs for the segmentation decoder / detection head")
    parser.add_argument("--finetune", action="store_true", help="fine-tune the encoder in segmentation/detection")
    parser.add_argument("--no-negated-prompts", action="store_true", help="zero-shot without negated prompts")
    parser.add_argument("--synth-n", type=int, default=None,
                        help="SynthCXR studies to generate if needed (default: the run's data.synth_n)")
    parser.add_argument("--synth-seed", type=int, default=None,
                        help="SynthCXR generation seed (default: the run's data.synth_seed; another seed "
                             "gives a held-out SynthCXR that shares no study with pretraining)")
    parser.add_argument("--cache-dir", default=None, help="where SynthCXR is generated (default: the run's)")
    parser.add_argument("--protocol", choices=["mgca", "prior"], default=None,
                        help="a paper's downstream protocol on --dataset folders (its splits, fractions, "
                             "recipes; tagged tables; docs/eval.md)")
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME=FOLDER",
                        help="with --protocol: a dataset in its published layout (mgca: chexpert, rsna, covidx, "
                             "siim, object_cxr; prior: chexpert_5x200=<PRIOR's json> and chexpert); repeatable")
    parser.add_argument("--protocol-option", action="append", default=[], metavar="DATASET.KEY=INT",
                        help="with --protocol, for small fixtures: chexpert.valid_num, rsna.detection_holdout")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_cli)
    return parser


def _default_out(model: str) -> str:
    from pathlib import Path
    path = Path(model)
    return str(path / "eval") if path.is_dir() else "eval_out"


def _probe_config(args) -> ProbeConfig:
    if args.mgca_exact_probe:
        return ProbeConfig(max_epochs=args.max_epochs, standardize=False, min_steps_per_epoch=1)
    return ProbeConfig(max_epochs=args.max_epochs)


def run_cli(args) -> int:
    from kgvlp.config.loader import ConfigError
    from kgvlp.eval import CheckpointError, EvalDataError, evaluate
    if args.protocol:
        from kgvlp.eval.protocols.cli import run_protocol
        return run_protocol(args, _default_out(args.model))
    args.seeds = args.seeds or [0, 1, 2]
    data_kwargs = {k: v for k, v in (("cache_dir", args.cache_dir), ("synth_n", args.synth_n),
                                                   ("synth_seed", args.synth_seed)) if v is not None}
    try:
        results = evaluate(
            args.model, args.data, tasks=args.task, suite=args.suite, out_dir=args.out or _default_out(args.model),
            fractions=args.fractions, seeds=args.seeds, baselines=not args.no_baselines, device=args.device,
            progress=not args.no_progress, probe=_probe_config(args),
            seg=SegConfig(epochs=args.dense_epochs, finetune=args.finetune),
            det=DetConfig(epochs=args.dense_epochs, finetune=args.finetune),
            negated_prompts=not args.no_negated_prompts, data_kwargs=data_kwargs)
    except (CheckpointError, EvalDataError, ConfigError) as err:
        print(f"kgvlp eval: {err}", file=sys.stderr)
        return 2
    from kgvlp.eval.report import markdown
    for result in results:
        print(markdown(result))
    return 0
