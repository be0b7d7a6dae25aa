"""Scale benchmark (not a test): full-release-shaped RRF files stream into a filtered graph.

    python tools/bench_rrf_scale.py --conso 5000000 --rel 30000000 --dir /tmp/rrf_bench

Writes synthetic MRCONSO/MRSTY/MRREL/MRDEF with UMLS column counts (2-8 names per concept,
~1 relation row per 6 MRREL/CUI pair, 10% of concepts in the chest TUI set), then runs
knowledge.build_graph with the default chest-radiology TUI filter and prints rows/s and
peak RSS (ru_maxrss) of the process.
"""
from __future__ import annotations

import argparse
import random
import resource
import time
from pathlib import Path

import knowledge
from knowledge.graph import CHEST_TUIS

TUIS = sorted(CHEST_TUIS) + [f"T{n:03d}" for n in range(100, 200) if f"T{n:03d}" not in CHEST_TUIS]


def generate(out: Path, n_conso: int, n_rel: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_cui = max(n_conso // 4, 1)
    with open(out / "MRSTY.RRF", "w") as sty, open(out / "MRDEF.RRF", "w") as dfn:
        for c in range(n_cui):
            tui = rng.choice(sorted(CHEST_TUIS)) if rng.random() < 0.1 else rng.choice(TUIS[len(CHEST_TUIS):])
            sty.write(f"C{c:07d}|{tui}|A1|Type|AT{c}||\n")
            if c % 5 == 0:
                dfn.write(f"C{c:07d}|A{c}|AT{c}||MSH|definition of concept {c}|N||\n")
    with open(out / "MRCONSO.RRF", "w") as f:
        for i in range(n_conso):
            c = i * n_cui // n_conso
            lat = "ENG" if i % 5 else "SPA"
            f.write(f"C{c:07d}|{lat}|{'P' if i % 4 == 0 else 'S'}|L{i}|PF|S{i}|Y|A{i}||||MSH|PT|D{c}|"
                    f"synthetic concept {c} name {i % 4}|0|{'O' if i % 50 == 0 else 'N'}||\n")
    rels = ("PAR", "CHD", "RO", "RB", "RN", "SIB")
    with open(out / "MRREL.RRF", "w") as f:
        for i in range(n_rel):
            a, b = rng.randrange(n_cui), rng.randrange(n_cui)
            f.write(f"C{a:07d}||CUI|{rels[i % 6]}|C{b:07d}||CUI||R{i}||MSH|MSH|||N||\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conso", type=int, default=5_000_000)
    ap.add_argument("--rel", type=int, default=30_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/rrf_bench"))
    ap.add_argument("--skip-generate", action="store_true")
    args = ap.parse_args()
    if not args.skip_generate:
        t = time.perf_counter()
        generate(args.dir, args.conso, args.rel)
        print(f"generated in {time.perf_counter() - t:.0f}s")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = knowledge.ParseReport()
    t = time.perf_counter()
    g = knowledge.build_graph(args.dir, report=report)
    elapsed = time.perf_counter() - t
    rows = sum(report.rows.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows read: {dict(report.rows)}")
    print(f"graph: {g.number_of_nodes()} concepts, {g.number_of_edges()} edges")
    print(f"{rows} rows in {elapsed:.0f}s = {rows / elapsed:,.0f} rows/s; "
          f"peak RSS {peak:.0f} MiB (before build {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
