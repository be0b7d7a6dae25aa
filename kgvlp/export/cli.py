"""``kgvlp export RUN_OR_CHECKPOINT --out DIR [--format open_clip|hf|timm|all]``."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` command to the top-level ``subparsers``."""
    parser = subparsers.add_parser(
        "export", help="write a run's encoders for open_clip, transformers and timm, with a model card",
        description="Export a run folder (config.yaml + final/model.safetensors) to DIR: open_clip/, "
                    "hf/, timm/, README.md (model card), kgvlp_export.json. See docs/export.md.")
    parser.add_argument("model", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("--out", required=True, help="export folder")
    parser.add_argument("--format", action="append", choices=["open_clip", "hf", "timm", "all"],
                        help="repeatable; default all (formats the run cannot take are skipped, "
                             "and the model card says why)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    from kgvlp.export import ExportError, export
    try:
        out = export(args.model, args.out, formats=args.format or ["all"], overwrite=args.overwrite)
    except (ExportError, FileNotFoundError) as err:
        print(f"kgvlp export: {err}", file=sys.stderr)
        return 2
    import json
    manifest = json.loads((out / "kgvlp_export.json").read_text())
    print(f"exported {', '.join(manifest['formats'])} to {out}")
    for fmt, why in manifest["skipped_formats"].items():
        print(f"skipped {fmt}: {why}")
    return 0
