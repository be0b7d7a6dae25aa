"""Linking throughput on the IU X-ray reports, and a check that the fast path links exactly
what the slow reference path links.

    python tools/bench_linking.py                 # all 3,955 reports, bundled subset
    python tools/bench_linking.py --limit 500 --graph g.jsonl.gz

Fast path: ``Linker.link_batch`` (tokenizer streaming, spaCy PhraseMatcher on the variant
keys, cached keys, linear negation scope). Reference path: ``Linker(graph, reference=True).link``
one report at a time (every word n-gram looked up in the alias table, keys recomputed without
a cache, negspacy's own negex component).
Throughput is reports per CPU-second of this single process (``time.process_time``), so
other jobs on the machine inflate the wall time but not the per-core figure; both are
printed with the load average.
"""
from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> None:
    import knowledge
    from knowledge.linking import Linker
    from knowledge.reports import iu_reports_path, read_reports

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", default=None, help="graph file (default: bundled subset)")
    parser.add_argument("--limit", type=int, default=0, help="first N reports only")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes of the fast path (best kept)")
    args = parser.parse_args(argv)

    texts = [t for _, t in read_reports(iu_reports_path())]
    texts = texts[:args.limit] if args.limit else texts
    graph = knowledge.load_graph(args.graph) if args.graph else knowledge.build_graph()
    fast, reference = Linker(graph), Linker(graph, reference=True)

    fast.link_batch(texts[:50])  # warm the key cache the way a long run would
    best_cpu = best_wall = float("inf")
    for _ in range(args.repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        linked = fast.link_batch(texts)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)

    cpu, wall = time.process_time(), time.perf_counter()
    expected = [reference.link(t) for t in texts]
    ref_cpu, ref_wall = time.process_time() - cpu, time.perf_counter() - wall

    differ = [i for i, (a, b) in enumerate(zip(linked, expected)) if a != b]
    mentions = sum(len(m) for m in linked)
    print(f"{len(texts)} IU reports, {mentions} mentions; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"fast path:      {len(texts) / best_cpu:,.0f} reports per CPU-second "
          f"({len(texts) / best_wall:,.0f}/s wall, best of {args.repeat})")
    print(f"reference path: {len(texts) / ref_cpu:,.0f} reports per CPU-second ({len(texts) / ref_wall:,.0f}/s wall)")
    print(f"same mentions as the reference path: {len(texts) - len(differ)}/{len(texts)} reports")
    if differ:
        i = differ[0]
        raise SystemExit(f"report {i} differs:\n  fast {linked[i]}\n  reference {expected[i]}")


if __name__ == "__main__":
    main()
