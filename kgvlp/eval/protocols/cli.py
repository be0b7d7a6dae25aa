"""``kgvlp eval RUN --protocol mgca|prior --dataset NAME=FOLDER …`` (called by kgvlp/eval/cli.py)."""
from __future__ import annotations

import sys

from kgvlp.eval.protocols.run import TASK_OF_EVAL_TASK, ProtocolOptions


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"{what} {value!r}: expected NAME=VALUE")
        out[name.strip()] = rest.strip()
    return out


def _builder_options(values: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in _pairs(values, "--protocol-option").items():
        dataset, dot, option = key.partition(".")
        if not dot:
            raise ValueError(f"--protocol-option {key}: expected DATASET.KEY=INT (e.g. chexpert.valid_num=40)")
        try:
            out.setdefault(dataset, {})[option] = int(value)
        except ValueError:
            raise ValueError(f"--protocol-option {key}={value}: {value!r} is not an integer") from None
    return out


def run_protocol(args, default_out: str) -> int:
    from kgvlp.config.loader import ConfigError
    from kgvlp.eval import CheckpointError, EvalDataError
    from kgvlp.eval.protocols.run import evaluate_protocol
    from kgvlp.eval.report import markdown
    try:
        roots = _pairs(args.dataset, "--dataset")
        if not roots:
            raise ValueError("--protocol needs at least one --dataset NAME=FOLDER")
        options = ProtocolOptions(
            seeds=args.seeds, fractions=args.fractions if args.fractions != [0.01, 0.1, 1.0] else None,
            max_epochs=None if args.max_epochs == 50 else args.max_epochs, builder=_builder_options(args.protocol_option),
            cache_dir=args.cache_dir or ".kgvlp_cache",
            tasks=sorted({TASK_OF_EVAL_TASK[t] for t in args.task if t in TASK_OF_EVAL_TASK}) if args.task else None)
        results = evaluate_protocol(args.model, args.protocol, roots, args.out or default_out, options,
                                    baselines=not args.no_baselines, device=args.device,
                                    progress=not args.no_progress)
    except (CheckpointError, EvalDataError, ConfigError, ValueError, FileNotFoundError) as err:
        print(f"kgvlp eval --protocol {args.protocol}: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(markdown(result))
    return 0
