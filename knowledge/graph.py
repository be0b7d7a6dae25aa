"""UMLS concept graph: build from RRF streams, k-hop neighbourhoods, save/load, statistics.

Edges are directed ``u -> v`` and read "u REL v": MRREL's REL (and RELA) is the relation
of CUI2 to CUI1, so a row ``CUI1|..|REL|CUI2|..|RELA`` becomes the edge ``CUI2 -> CUI1``.
UMLS lists most relations twice, once per direction (``A PAR B`` and ``B CHD A``); both
rows map to one canonical edge (``CHD``/``RN``/``AQ`` preferred; among RELA pairs from
MRDOC the alphabetically smaller label; symmetric relations point from the smaller CUI).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterable

import networkx as nx

from knowledge.rrf import ParseReport, read_meta

log = logging.getLogger(__name__)

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
REL_INVERSE = {"PAR": "CHD", "CHD": "PAR", "RB": "RN", "RN": "RB", "AQ": "QB", "QB": "AQ"}
PREFERRED_REL = frozenset({"CHD", "RN", "AQ"})


def bundled_meta_dir() -> Path:
    """The chest-radiology RRF subset shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "umls_subset"


def _name_rank(row: dict[str, str]) -> tuple:
    return (row.get("TS") == "P", row.get("STT") == "PF", row.get("ISPREF") == "Y",
            row.get("TTY") in ("PT", "PN", "MH"))


def _rela_inverses(meta_dir: Path, report: ParseReport) -> dict[str, str]:
    inverses = {}
    for row in read_meta(meta_dir, "MRDOC.RRF", report):
        if row["DOCKEY"] == "RELA" and row["TYPE"] == "rela_inverse":
            inverses[row["VALUE"]] = row["EXPL"]
    return inverses


def canonical_edge(cui1: str, rel: str, cui2: str, rela: str,
                   rela_inverse: dict[str, str]) -> tuple[str, str, str, str]:
    """(u, v, rel, rela) reading "u rel v" for MRREL row ``cui1 rel cui2 rela``."""
    forward = (cui2, cui1, rel, rela)
    inverse = (cui1, cui2, REL_INVERSE.get(rel, rel), rela_inverse.get(rela, rela) if rela else "")
    if rel in REL_INVERSE:
        return forward if rel in PREFERRED_REL else inverse
    if rela and rela in rela_inverse and rela_inverse[rela] != rela:
        return forward if rela < rela_inverse[rela] else inverse
    if rela and rela not in rela_inverse:
        return forward
    return forward if cui2 <= cui1 else inverse


def build_graph(meta_dir: str | Path | None = None, sabs: Iterable[str] | None = None,
                tuis: Iterable[str] | None = CHEST_TUIS, languages: Iterable[str] = ("ENG",),
                cuis: Iterable[str] | None = None, rels: Iterable[str] | None = DEFAULT_RELS,
                keep_suppressed: bool = False, max_aliases: int = 64,
                report: ParseReport | None = None) -> nx.MultiDiGraph:
    """Stream a UMLS release (or the bundled subset) into a filtered concept graph.

    sabs: source vocabularies kept for names and relations (None: all). tuis: semantic
    types a concept needs at least one of (None: all; default: ``CHEST_TUIS``).
    cuis: allow-list of concepts. rels: REL values kept (None: all). Memory grows with the
    filtered graph, not with the release: files are read one row at a time.
    """
    meta_dir = Path(meta_dir) if meta_dir is not None else bundled_meta_dir()
    report = report if report is not None else ParseReport()
    sabs, tuis = (frozenset(sabs) if sabs else None), (frozenset(tuis) if tuis else None)
    allow, languages = (frozenset(cuis) if cuis else None), frozenset(languages)
    rels = frozenset(rels) if rels else None

    types: dict[str, dict[str, str]] = {}
    for row in read_meta(meta_dir, "MRSTY.RRF", report):
        if allow is None or row["CUI"] in allow:
            types.setdefault(row["CUI"], {})[row["TUI"]] = row["STY"]
    keep = {cui for cui, tui_names in types.items() if tuis is None or tuis & tui_names.keys()}

    names: dict[str, tuple[tuple, str]] = {}
    aliases: dict[str, dict[str, str]] = {}
    concept_sabs: dict[str, set[str]] = {}
    for row in read_meta(meta_dir, "MRCONSO.RRF", report):
        cui = row["CUI"]
        if cui not in keep or row["LAT"] not in languages:
            continue
        if (sabs is not None and row["SAB"] not in sabs) or (
                not keep_suppressed and row["SUPPRESS"] in SUPPRESSED):
            continue
        rank = _name_rank(row)
        if cui not in names or rank > names[cui][0]:
            names[cui] = (rank, row["STR"])
        alias_map = aliases.setdefault(cui, {})
        if len(alias_map) < max_aliases:
            alias_map.setdefault(row["STR"].lower(), row["STR"])
        concept_sabs.setdefault(cui, set()).add(row["SAB"])

    g = nx.MultiDiGraph()
    for cui, (_, name) in names.items():
        g.add_node(cui, name=name,
                   aliases=sorted(a for k, a in aliases[cui].items() if k != name.lower()),
                   tuis=sorted(types[cui]), stys=[types[cui][t] for t in sorted(types[cui])],
                   sabs=sorted(concept_sabs[cui]), definition="")
    del names, aliases, concept_sabs, types

    for row in read_meta(meta_dir, "MRDEF.RRF", report):
        cui = row["CUI"]
        if cui in g and not g.nodes[cui]["definition"] and (sabs is None or row["SAB"] in sabs):
            if keep_suppressed or row["SUPPRESS"] not in SUPPRESSED:
                g.nodes[cui]["definition"] = row["DEF"]

    rela_inverse = _rela_inverses(meta_dir, report)
    for row in read_meta(meta_dir, "MRREL.RRF", report):
        cui1, cui2, rel = row["CUI1"], row["CUI2"], row["REL"]
        if cui1 == cui2 or cui1 not in g or cui2 not in g:
            continue
        if (rels is not None and rel not in rels) or (sabs is not None and row["SAB"] not in sabs):
            continue
        if not keep_suppressed and row["SUPPRESS"] in SUPPRESSED:
            continue
        u, v, rel, rela = canonical_edge(cui1, rel, cui2, row["RELA"], rela_inverse)
        key = f"{rel}:{rela}:{row['SAB']}"
        if not g.has_edge(u, v, key):
            g.add_edge(u, v, key=key, rel=rel, rela=rela, sab=row["SAB"])

    g.graph.update(meta_dir=str(meta_dir), parse_report=report.to_dict(),
                   filters={"sabs": sorted(sabs) if sabs else None,
                            "tuis": sorted(tuis) if tuis else None,
                            "languages": sorted(languages), "rels": sorted(rels) if rels else None,
                            "cuis": len(allow) if allow else None})
    g.graph["fingerprint"] = graph_fingerprint(g)
    if report.total_skipped:
        log.warning("skipped %d malformed rows:\n%s", report.total_skipped, report.summary())
    return g


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
    with gzip.open(path, "wt", encoding="utf-8") as f:
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
