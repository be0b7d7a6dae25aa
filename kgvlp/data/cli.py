"""``kgvlp data …`` subcommands: synth, prepare, show (registered by the main CLI)."""
from __future__ import annotations

import argparse
import json
import time


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


def register(subparsers) -> None:
    synth = subparsers.add_parser("synth", help="generate a SynthCXR cache folder")
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=positive_int, default=2000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=positive_int, default=256, help="image side in pixels (224–512)")
    synth.add_argument("--workers", type=positive_int, default=None)
    synth.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE",
                       help="difficulty knob (data.synth keys, docs/data.md), e.g. contrast=0.5 or "
                            "omit_from_reports='[\"nodule\"]' (JSON values)")
    synth.set_defaults(func=_synth)

    prepare = subparsers.add_parser("prepare", help="decode a real dataset once into an image cache")
    from kgvlp.data.readers import READERS
    prepare.add_argument("dataset", choices=sorted(READERS))
    prepare.add_argument("--root", required=True, help="the dataset folder in its published layout")
    prepare.add_argument("--out", required=True)
    prepare.add_argument("--size", type=positive_int, default=256)
    prepare.add_argument("--workers", type=positive_int, default=None)
    prepare.add_argument("--limit", type=positive_int, default=None, help="only the first N records")
    prepare.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="reader option, e.g. one_frontal_per_study=true (JSON values)")
    prepare.set_defaults(func=_prepare)

    show = subparsers.add_parser("show", help="render samples with masks, boxes and reports to a PNG")
    show.add_argument("folder")
    show.add_argument("--n", type=positive_int, default=8)
    show.add_argument("--out", default="grid.png")
    show.add_argument("--split", default=None)
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(func=_show)


def _knobs(items: list[str]):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from kgvlp.config.schema import SynthConfig
    from kgvlp.config.synth_knobs import synth_range_problem
    knobs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--knob {item!r}: expected KEY=VALUE")
        try:
            knobs[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(f"--knob {item!r}: the value is not JSON") from None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SynthConfig), knobs)
    except OmegaConfBaseException as err:
        raise SystemExit(f"--knob: {str(err).splitlines()[0]} (valid keys: data.synth in docs/data.md)") from None
    problem = synth_range_problem(merged, "--knob")
    if problem:
        raise SystemExit(problem)
    return OmegaConf.to_object(merged)


def _synth(args) -> None:
    from kgvlp.data.synth.generate import generate_synthcxr
    start = time.perf_counter()
    out = generate_synthcxr(args.out, args.n, args.seed, args.size, workers=args.workers,
                            knobs=_knobs(args.knob))
    print(f"wrote {args.n} studies to {out} in {time.perf_counter() - start:.1f} s")


def _prepare(args) -> None:
    from kgvlp.data.prepare import prepare
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    counts = prepare(args.dataset, args.root, args.out, size=args.size, workers=args.workers,
                     limit=args.limit, **options)
    print(json.dumps(counts))


def _show(args) -> None:
    from kgvlp.data.show import show
    print(show(args.folder, n=args.n, out=args.out, split=args.split, seed=args.seed))


def main(argv=None) -> None:
    """Standalone entry (``python -m kgvlp.data.cli``) for when the main CLI is not there."""
    parser = argparse.ArgumentParser(prog="kgvlp data")
    register(parser.add_subparsers(dest="data_cmd", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
