"""The ``kgvlp`` command: train, bench, eval, data, knowledge (and more as they land)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def _train(args) -> int:
    from kgvlp.config import load_experiment
    from kgvlp.engine.trainer import Trainer
    experiment = load_experiment(args.experiment, args.overrides)
    trainer = Trainer(experiment, run_dir=Path(args.run_dir) if args.run_dir else None,
                      resume=Path(args.resume) if args.resume else None)
    result = trainer.train()
    if trainer.rank == 0:
        print(f"run folder:  {result.run_dir}\n"
              f"weights:     {result.final_weights}\n"
              f"checkpoint:  {trainer.last_checkpoint}\n"
              f"metrics:     {result.run_dir / 'metrics.jsonl'} (TensorBoard: {result.run_dir / 'tensorboard'})")
        if result.history:
            first, last = result.history[0], result.history[-1]
            print(f"loss:        {first['loss/total']:.4f} (step {first['step']}) → "
                  f"{last['loss/total']:.4f} (step {last['step']})")
        if trainer.validator is not None:
            stop = trainer.stopping
            print(f"validation:  best {stop.best:.4f} at step {stop.best_step} "
                  f"(weights: {result.run_dir / 'best' / 'model.safetensors'})"
                  + (f"; stopped early at step {result.steps}" if result.stopped_early else ""))
        if experiment.config.eval.at_end:
            from kgvlp.eval import run_suite_for_run
            run_suite_for_run(result.run_dir, experiment.config.eval)
            summary = result.run_dir / experiment.config.eval.out_subdir / "summary.md"
            if summary.is_file():
                print(f"\nevaluation ({summary}):\n{summary.read_text()}")
    return 0


def _bench(args) -> int:
    from kgvlp.bench import bench_train
    bench_train(args.experiment, args.overrides, steps=args.steps, warmup=args.warmup,
                baselines=args.baseline)
    return 0


def _bench_compare(args) -> int:
    from kgvlp.perf.compare import compare, default_out, dry_run, parse_runs, print_report
    specs = parse_runs(args.experiment, args.overrides, args.also)
    if args.dry_run:
        print("\n".join(dry_run(specs)))
        return 0
    print_report(compare(specs, args.steps, args.warmup, Path(args.out) if args.out else default_out()))
    return 0


def _register_optional(sub, module: str, command: str, help_text: str, wanted: str | None) -> None:
    """Sub-commands owned by other packages, each with a ``register(subparsers)``.

    Only the command being run (``wanted``; all when None, e.g. for ``--help``) imports its
    package: ``kgvlp knowledge build-graph`` must not pay torch's import (~1 GB of RSS on a
    full UMLS build) for the training commands it does not run."""
    if wanted is not None and wanted != command:
        sub.add_parser(command, help=help_text)
        return
    try:
        mod = importlib.import_module(module)
    except ImportError as err:  # a missing optional part must not break `kgvlp train`
        parser = sub.add_parser(command, help=f"{help_text} (unavailable: {err})")
        parser.set_defaults(func=lambda a, e=err: sys.exit(f"kgvlp {command} is unavailable: {e}"))
        return
    if command in ("eval", "export", "ablate"):  # these add themselves to the top-level subparsers
        mod.register(sub)
    else:
        mod.register(sub.add_parser(command, help=help_text).add_subparsers(dest=f"{command}_cmd", required=True))


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgvlp", description=__doc__)
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of a known failure (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an experiment YAML (key=value overrides last)")
    train.add_argument("experiment")
    train.add_argument("overrides", nargs="*", help="e.g. trainer.max_steps=50 objectives.cta.weight=0.5")
    train.add_argument("--resume", help="a run folder to continue exactly from its latest checkpoint")
    train.add_argument("--run-dir", help="write the run here instead of OUT_DIR/NAME-TIMESTAMP")
    train.set_defaults(func=_train)

    bench = sub.add_parser("bench", help="benchmarks (not tests)")
    bench_sub = bench.add_subparsers(dest="bench_cmd", required=True)
    bench_train = bench_sub.add_parser("train", help="pairs/s, step split and peak memory of an experiment")
    bench_train.add_argument("experiment")
    bench_train.add_argument("overrides", nargs="*")
    bench_train.add_argument("--steps", type=int, default=10)
    bench_train.add_argument("--warmup", type=int, default=3)
    bench_train.add_argument("--baseline", action="append", default=[],
                             help='overrides of a configuration to run side by side, e.g. '
                                  '"objectives.cta.weight=0 objectives.cpa.weight=0" (repeatable)')
    bench_train.set_defaults(func=_bench)
    compare = bench_sub.add_parser(
        "compare", help="each stack vs a plain contrastive step on its encoders, interleaved in one process",
        description="Per run: pairs/s, × a plain symmetric-InfoNCE step on the same encoders, batch and "
                    "precision, peak memory, FLOP/pair, MFU, the profiled per-objective split (chrome "
                    "traces), host syncs and graph breaks on CUDA; compare.json in --out.")
    compare.add_argument("experiment")
    compare.add_argument("overrides", nargs="*", help="k=v for every run")
    compare.add_argument("--also", action="append", default=[],
                         help='another run: "k=v ..." on top of the overrides, or "OTHER.yaml k=v ..."; '
                              'as=LABEL names it, stage=NAME trains at that stage (repeatable)')
    compare.add_argument("--steps", type=int, default=8, help="interleaved timed rounds")
    compare.add_argument("--warmup", type=int, default=2, help="untimed steps per run before the rounds")
    compare.add_argument("--out", help="folder for compare.json and the traces (default runs/bench-compare-TIME)")
    compare.add_argument("--dry-run", action="store_true",
                         help="load every run's config and stage, print one line each, build nothing")
    compare.set_defaults(func=_bench_compare)

    _register_optional(sub, "kgvlp.eval.cli", "eval", "evaluate a trained image encoder", wanted)
    _register_optional(sub, "kgvlp.data.cli", "data", "synthetic data, dataset preparation, previews", wanted)
    _register_optional(sub, "knowledge.cli", "knowledge", "UMLS graphs, linking, embeddings", wanted)
    _register_optional(sub, "kgvlp.export.cli", "export", "export encoders for open_clip, transformers, timm", wanted)
    _register_optional(sub, "kgvlp.ablation.cli", "ablate",
                       "ablation grids: train → eval per run, local/SLURM/Ray, report", wanted)
    return parser


# Failures a user can cause with a file or an option: each is reported as one line naming
# the file (and key, line or row) and what was expected, exit status 2, no traceback.
# "module:Class"; only modules already imported are looked at (an error of a module that
# was never imported cannot have been raised), so this list costs no imports.
KNOWN_ERRORS = ("kgvlp.config.loader:ConfigError", "kgvlp.models.weights:WeightsError",
                "kgvlp.eval.loading:CheckpointError", "kgvlp.eval.data:EvalDataError",
                "kgvlp.export.formats:ExportError", "kgvlp.export.names:NameMapError",
                "kgvlp.data.readers.common:LayoutError", "kgvlp.data.readers.common:ReportError",
                "kgvlp.data.cache:CacheError",
                "kgvlp.engine.trainer:NonFiniteLoss",
                "knowledge.blind_set:BlindSetError", "knowledge.batch:LinkCacheError",
                "knowledge.reports:ReportFormatError")
USAGE_EXIT = 2
DEBUG_FLAG, DEBUG_ENV = "--debug", "KGVLP_DEBUG"


def known_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                        PermissionError, UnicodeDecodeError]
    for entry in KNOWN_ERRORS:
        module, _, name = entry.partition(":")
        if module in sys.modules and hasattr(sys.modules[module], name):
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def one_line(err: BaseException) -> str:
    """The error's message on one line (KeyError's repr quotes dropped; an OSError without
    its file in the text gets it)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {err.strerror or text}"
    if isinstance(err, UnicodeDecodeError):
        text = f"not UTF-8 text ({err.reason} at byte {err.start}) where text was expected"
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK is in the environment too.
    argv = [a for a in argv if not a.startswith("--local_rank")]
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    # The first word that is not an option names the command (flags only come first).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(wanted)
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`--steps 5 trainer.lr=1e-4`).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args) or 0
    except Exception as err:  # noqa: BLE001 — filtered to the known failures just below
        if debug or not isinstance(err, known_errors()):
            raise
        print(f"kgvlp: {one_line(err)} (--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
