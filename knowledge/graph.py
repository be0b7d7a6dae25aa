"""UMLS concept graph: filter constants, k-hop neighbourhoods, save/load, statistics.

Edges are directed ``u -> v`` and read "u REL v": MRREL's REL (and RELA) is the relation
of CUI2 to CUI1, so a row ``CUI1|..|REL|CUI2|..|RELA`` becomes the edge ``CUI2 -> CUI1``;
each fact is stored once (orientation rules: knowledge.relations; building:
knowledge.graph_build).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import networkx as nx

FORMAT = "kgvlp-knowledge-graph"
VERSION = 1
# Semantic types kept by default: anatomy, abnormalities, findings, diseases, injuries,
# neoplasms, procedures and devices — what chest radiograph reports talk about.
CHEST_TUIS = frozenset({
    "T017", "T019", "T020", "T022", "T023", "T029", "T030", "T033", "T037", "T046", "T047",
    "T060", "T061", "T074", "T184", "T190", "T191",
})
DEFAULT_RELS = frozenset({"PAR", "CHD", "RB", "RN", "RO", "RQ"})
SUPPRESSED = frozenset({"O", "E", "Y"})


def bundled_meta_dir() -> Path:
    """The chest-radiology RRF subset shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "umls_subset"


def graph_fingerprint(g: nx.MultiDiGraph) -> str:
    """Content hash over concept ids and edges; equal graphs share it across save/load."""
    h = hashlib.sha256()
    for cui in sorted(g.nodes):
        h.update(cui.encode() + b"\n")
    for u, v, key in sorted(g.edges(keys=True)):
        h.update(f"{u}\t{v}\t{key}\n".encode())
    return h.hexdigest()[:16]


def k_hop(g: nx.MultiDiGraph, seeds: Iterable[str], k: int = 1) -> nx.MultiDiGraph:
    """Subgraph induced by concepts within ``k`` edges (either direction) of any seed."""
    frontier = {s for s in seeds if s in g}
    reached = set(frontier)
    for _ in range(k):
        nxt = set()
        for cui in frontier:
            nxt.update(g.successors(cui))
            nxt.update(g.predecessors(cui))
        frontier = nxt - reached
        reached |= frontier
    sub = g.subgraph(reached).copy()
    sub.graph["fingerprint"] = graph_fingerprint(sub)
    return sub


def save_graph(g: nx.MultiDiGraph, path: str | Path) -> Path:
    """Write gzip JSON lines: a header, one line per concept, one per edge."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": VERSION, "fingerprint": graph_fingerprint(g),
              "graph": {k: v for k, v in g.graph.items() if k != "fingerprint"}}
    # zlib's default level 6, not gzip.open's 9: on a full release (225 MB of graph) level 9
    # spent ~5 min compressing for a file a few percent smaller.
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as f:
        f.write(json.dumps(header) + "\n")
        for cui, attrs in g.nodes(data=True):
            f.write(json.dumps({"n": cui, **attrs}, ensure_ascii=False) + "\n")
        for u, v, key, attrs in g.edges(keys=True, data=True):
            f.write(json.dumps({"u": u, "v": v, "k": key, **attrs}, ensure_ascii=False) + "\n")
    return path


def load_graph(path: str | Path) -> nx.MultiDiGraph:
    path = Path(path)
    g = nx.MultiDiGraph()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        for line in f:
            rec = json.loads(line)
            if "n" in rec:
                g.add_node(rec.pop("n"), **rec)
            else:
                g.add_edge(rec.pop("u"), rec.pop("v"), key=rec.pop("k"), **rec)
    g.graph.update(header["graph"])
    g.graph["fingerprint"] = graph_fingerprint(g)
    if g.graph["fingerprint"] != header["fingerprint"]:
        raise ValueError(f"{path}: content fingerprint {g.graph['fingerprint']} does not match "
                         f"header {header['fingerprint']} (file edited or truncated)")
    return g


def graph_stats(g: nx.MultiDiGraph) -> dict:
    degrees = [d for _, d in g.degree()]
    return {
        "concepts": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "fingerprint": g.graph.get("fingerprint", graph_fingerprint(g)),
        "relations": dict(Counter(d["rel"] + ("/" + d["rela"] if d["rela"] else "")
                                  for _, _, d in g.edges(data=True)).most_common()),
        "semantic_types": dict(Counter(t for _, ts in g.nodes(data="tuis") for t in ts).most_common()),
        "sources": dict(Counter(s for _, ss in g.nodes(data="sabs") for s in ss).most_common()),
        "with_definition": sum(1 for _, d in g.nodes(data="definition") if d),
        "aliases": sum(len(a) for _, a in g.nodes(data="aliases")),
        "mean_degree": (sum(degrees) / len(degrees)) if degrees else 0.0,
        "isolated": sum(1 for d in degrees if d == 0),
        "weak_components": nx.number_weakly_connected_components(g) if len(g) else 0,
    }


def __getattr__(name: str):
    # build_graph moved to knowledge.graph_build (which imports this module); keep the old name
    if name == "build_graph":
        from knowledge.graph_build import build_graph
        return build_graph
    raise AttributeError(f"module 'knowledge.graph' has no attribute {name!r}")
