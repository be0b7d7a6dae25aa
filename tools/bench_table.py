"""Markdown tables from `kgvlp bench compare` reports (README and docs speed tables).

    python tools/bench_table.py OUT/compare.json [MORE/compare.json ...]
"""
from __future__ import annotations

import json
import sys

from kgvlp.perf.compare import markdown_table


def main(paths: list[str]) -> None:
    for path in paths:
        report = json.loads(open(path).read())
        print(f"{report['device']}, load average {report['load_average'][0]:.1f}, {report['steps']} "
              f"interleaved rounds after {report['warmup']} warm-up ({report['started']}):\n")
        print(markdown_table(report) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
