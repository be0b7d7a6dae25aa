"""``kgvlp knowledge …`` / ``python -m knowledge …`` subcommands."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _build_graph(args) -> None:
    from knowledge.graph import CHEST_TUIS, save_graph
    from knowledge.graph_build import build_graph

    tuis = None if args.tui == ["all"] else (args.tui or CHEST_TUIS)
    g = build_graph(args.meta, sabs=args.sab, tuis=tuis, languages=args.lang)  # logs skipped rows once
    save_graph(g, args.out)
    print(f"{g.number_of_nodes()} concepts, {g.number_of_edges()} edges -> {args.out} "
          f"(fingerprint {g.graph['fingerprint']})")


def _link(args) -> None:
    from knowledge.linking import CHUNK_CHARS, Linker
    from knowledge.reports import CorpusReport, read_reports

    corpus = CorpusReport()
    reports = list(read_reports(args.reports, report=corpus))
    if args.limit:
        reports = reports[:args.limit]
    linker = Linker(args.graph)
    start = time.perf_counter()
    results = linker.link_many([t for _, t in reports], processes=args.processes, cache_dir=args.cache)
    elapsed = time.perf_counter() - start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for (report_id, text), mentions in zip(reports, results):
            f.write(json.dumps({"id": report_id, "text": text, "mentions": [m.to_dict() for m in mentions]}) + "\n")
    with_concept = sum(1 for m in results if m)
    print(f"{len(reports)} reports in {elapsed:.1f}s ({len(reports) / max(elapsed, 1e-9):.1f}/s, "
          f"{args.processes} processes); {with_concept / max(len(reports), 1):.1%} with >=1 concept -> {args.out}")
    chunked = [report_id for report_id, text in reports if linker.needs_chunks(text)]
    if chunked:
        print(f"{len(chunked)} reports longer than {CHUNK_CHARS:,} characters linked in pieces: "
              f"{', '.join(chunked[:10])}")
    if corpus.skipped or corpus.replaced_utf8:
        print(corpus.summary(), file=sys.stderr)


def _evaluate(args) -> None:
    from knowledge.blind_set import BLIND_SET_DIR, load_blind_set
    from knowledge.evaluate import evaluate, format_report
    from knowledge.graph import load_graph
    from knowledge.graph_build import build_graph

    blind = load_blind_set(args.blind_set or BLIND_SET_DIR)
    g = load_graph(args.graph) if args.graph else build_graph()
    results = evaluate(blind, g)
    print(format_report([r for r, _ in results], blind))
    if args.errors:
        for system, errors in results:
            print(f"\n{system.name}: {len(errors)} wrong pairs (first {args.errors})")
            for e in errors[:args.errors]:
                print(f"  {e['sentence_id']}\t{e['finding']}\tgold {e['gold']}\tpredicted {e['predicted']}\t{e['text']}")


def _embed(args) -> None:
    from knowledge.embeddings import ConceptEmbeddings
    from knowledge.graph import load_graph

    bank = ConceptEmbeddings.build(load_graph(args.graph), graph_dim=args.graph_dim, epochs=args.epochs)
    bank.save(args.out)
    print(f"{len(bank.cuis)} concept vectors of dim {bank.vectors.shape[1]} -> {args.out}")


def _query(args) -> None:
    from knowledge.graph import load_graph

    g = load_graph(args.graph)
    if args.query in g:
        d = g.nodes[args.query]
        print(json.dumps({"cui": args.query, **d}, indent=2))
        for _, v, e in g.out_edges(args.query, data=True):
            print(f"  {args.query} {e['rel']}/{e['rela']} {v} ({g.nodes[v]['name']})")
        for u, _, e in g.in_edges(args.query, data=True):
            print(f"  {u} ({g.nodes[u]['name']}) {e['rel']}/{e['rela']} {args.query}")
    if args.embeddings or args.query not in g:
        if args.embeddings:
            from knowledge.embeddings import ConceptEmbeddings
            bank = ConceptEmbeddings.load(args.embeddings, g)
            for cui, score in bank.nearest(args.query, args.k)[0]:
                print(f"{cui}\t{score:.3f}\t{g.nodes[cui]['name']}")
        else:
            from knowledge.linking import Linker
            for m in Linker(args.graph).link(args.query):
                print(f"{m.cui}\t{m.score:.3f}\t{g.nodes[m.cui]['name']}\t{m.text!r}"
                      f"{' negated' if m.negated else ''}{' uncertain' if m.uncertain else ''}")


def _stats(args) -> None:
    from knowledge.graph import graph_stats, load_graph
    print(json.dumps(graph_stats(load_graph(args.graph)), indent=2))


def register(subparsers) -> None:
    """Add the knowledge subcommands to an argparse subparsers object; each sets ``func``."""
    p = subparsers.add_parser("build-graph", help="UMLS RRF files -> concept graph")
    p.add_argument("--meta", type=Path, default=None, help="UMLS META folder (default: bundled subset)")
    p.add_argument("--sab", nargs="+", default=None, help="source vocabularies to keep (default: all)")
    p.add_argument("--tui", nargs="+", default=None,
                   help="semantic types to keep (default: chest-radiology set; 'all' keeps every type)")
    p.add_argument("--lang", nargs="+", default=["ENG"])
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_build_graph)

    p = subparsers.add_parser("link", help="link report text to graph concepts")
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--reports", type=Path, required=True,
                   help="IU X-ray tgz or XML folder, MIMIC folder of .txt, CSV or JSONL")
    p.add_argument("--out", type=Path, required=True, help="output JSONL")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: none)")
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(func=_link)

    p = subparsers.add_parser("evaluate", help="linker and two baselines on the blind set of IU sentences")
    p.add_argument("--graph", type=Path, default=None, help="graph file (default: the bundled subset)")
    p.add_argument("--blind-set", type=Path, default=None, help="blind-set folder (default: the bundled one)")
    p.add_argument("--errors", type=int, default=0, help="print this many wrong pairs per system")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("embed", help="concept embeddings and faiss index")
    p.add_argument("--graph", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--graph-dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=200)
    p.set_defaults(func=_embed)

    p = subparsers.add_parser("query", help="look up a CUI, or link/search free text")
    p.add_argument("graph", type=Path)
    p.add_argument("query")
    p.add_argument("--embeddings", type=Path, default=None, help="nearest concepts from this bank")
    p.add_argument("-k", type=int, default=5)
    p.set_defaults(func=_query)

    p = subparsers.add_parser("stats", help="graph statistics")
    p.add_argument("graph", type=Path)
    p.set_defaults(func=_stats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m knowledge")
    register(parser.add_subparsers(dest="knowledge_cmd", required=True))
    args = parser.parse_args(argv)
    args.func(args)
