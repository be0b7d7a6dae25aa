"""Build the filtered concept graph from a UMLS release in bounded memory.

Four streaming passes, each keeping only what the final graph needs:

1. MRSTY fixes the kept set: every concept with a kept semantic type gets a dense integer
   code; its types are held as the id of its distinct (TUI, STY) combination.
2. MRCONSO: per kept concept the best name, up to ``max_aliases`` names and a bit mask of
   its source vocabularies (lists indexed by code, no per-concept dicts or sets; vocabulary
   sets are nearly unique per concept, so they are not interned).
3. MRDEF: the first definition of each concept that has a name.
4. MRREL: rows between two concepts with a node become three int32 arrays (CUI1 code, CUI2 code,
   (REL, RELA, SAB) id). Orientation (knowledge.relations) and de-duplication run on the
   arrays; only the final edges enter networkx.

Only the networkx graph is built from Python objects per concept and per edge, so peak
memory is that graph plus a few bytes per MRREL row. Lists of semantic types are shared
between concepts with the same combination: treat node attributes as read-only.
The result (nodes, edges, their order and attributes) is the one the earlier row-by-row
builder produced; only relation orientation without MRDOC and blank-line counting changed.
"""
from __future__ import annotations

import gc
import logging
from array import array
from pathlib import Path
from typing import Iterable

import networkx as nx
import numpy as np

from knowledge.graph import (CHEST_TUIS, DEFAULT_RELS, SUPPRESSED, bundled_meta_dir,
                             graph_fingerprint)
from knowledge.relations import (Turn, assumption_warning, orient, read_mrdoc_inverses,
                                 resolve_inverses)
from knowledge.rrf import ParseReport, open_meta

log = logging.getLogger(__name__)
PREFERRED_TTY = frozenset({"PT", "PN", "MH"})
EDGE_CHUNK = 1 << 20  # edges converted to Python objects at a time


class _Interner:
    """Dense ids for distinct hashable values (type combinations, vocabulary sets, labels)."""

    def __init__(self):
        self.ids: dict = {}
        self.values: list = []

    def id(self, value) -> int:
        found = self.ids.get(value)
        if found is None:
            found = self.ids[value] = len(self.values)
            self.values.append(value)
        return found


class _KeptConcepts:
    """Pass 1 (MRSTY): code -> CUI, CUI -> code, and each kept concept's type combination."""

    def __init__(self, meta_dir: Path, allow: frozenset | None, tuis: frozenset | None,
                 report: ParseReport):
        meta = open_meta(meta_dir, "MRSTY.RRF", report)
        i_cui, i_tui, i_sty = meta.index("CUI"), meta.index("TUI"), meta.index("STY")
        combos = _Interner()          # id -> tuple of (TUI, STY), TUI order of first sight
        combos.id(())
        step: dict[tuple[int, str, str], int] = {}
        combo_of: dict[str, int] = {}
        for f in meta.rows:
            cui = f[i_cui]
            if allow is not None and cui not in allow:
                continue
            old = combo_of.get(cui, 0)
            move = (old, f[i_tui], f[i_sty])
            new = step.get(move)
            if new is None:
                items = dict(combos.values[old])
                items[f[i_tui]] = f[i_sty]  # the last STY of a TUI wins, as in a dict
                new = step[move] = combos.id(tuple(items.items()))
            combo_of[cui] = new
        kept_combo = [tuis is None or any(t in tuis for t, _ in c) for c in combos.values]
        self.cuis: list[str] = [cui for cui, c in combo_of.items() if kept_combo[c]]
        self.code: dict[str, int] = {cui: i for i, cui in enumerate(self.cuis)}
        self.combo: list[int] = [combo_of[cui] for cui in self.cuis]
        del combo_of
        # shared attribute lists per combination: sorted TUIs and their STYs in that order
        self.tuis, self.stys = [], []
        for c in combos.values:
            ordered = sorted(dict(c).items())
            self.tuis.append([t for t, _ in ordered])
            self.stys.append([s for _, s in ordered])


class _Names:
    """Pass 2 (MRCONSO): best name, aliases and vocabularies of each kept concept."""

    def __init__(self, meta_dir: Path, kept: _KeptConcepts, sabs: frozenset | None,
                 languages: frozenset, keep_suppressed: bool, max_aliases: int,
                 report: ParseReport):
        n = len(kept.cuis)
        self.order = array("i")                 # codes in order of their first kept name
        self.rank: list[int] = [-1] * n         # -1: no kept name (the concept is no node)
        self.name: list[str | None] = [None] * n
        self.aliases: list[list[str] | None] = [None] * n
        self.sab_mask: list[int] = [0] * n      # bit b set: vocabulary self.sab_names[b]
        sab_bit: dict[str, int] = {}
        meta = open_meta(meta_dir, "MRCONSO.RRF", report)
        col = {c: meta.index(c) for c in ("CUI", "LAT", "SAB", "SUPPRESS", "STR", "TS", "STT",
                                           "ISPREF", "TTY")}
        i_cui, i_lat, i_sab, i_sup, i_str = (col[c] for c in ("CUI", "LAT", "SAB", "SUPPRESS", "STR"))
        i_ts, i_stt, i_pref, i_tty = (col[c] for c in ("TS", "STT", "ISPREF", "TTY"))
        code = kept.code
        for f in meta.rows:
            i = code.get(f[i_cui])
            if i is None or f[i_lat] not in languages:
                continue
            sab = f[i_sab]
            if (sabs is not None and sab not in sabs) or (
                    not keep_suppressed and i_sup >= 0 and f[i_sup] in SUPPRESSED):
                continue
            # the name rank of the row-by-row builder, (TS=P, STT=PF, ISPREF=Y, TTY preferred)
            # compared as a tuple of booleans == these four bits
            rank = ((i_ts >= 0 and f[i_ts] == "P") << 3 | (i_stt >= 0 and f[i_stt] == "PF") << 2
                    | (i_pref >= 0 and f[i_pref] == "Y") << 1 | (i_tty >= 0 and f[i_tty] in PREFERRED_TTY))
            text = f[i_str]
            if self.rank[i] < 0:
                self.order.append(i)
                self.aliases[i] = []
            if rank > self.rank[i]:
                self.rank[i], self.name[i] = rank, text
            names = self.aliases[i]
            if len(names) < max_aliases:
                lower = text.lower()
                if not any(a.lower() == lower for a in names):
                    names.append(text)
            bit = sab_bit.get(sab)
            if bit is None:
                bit = sab_bit[sab] = len(sab_bit)
            self.sab_mask[i] |= 1 << bit
        self.sab_names = sorted(sab_bit, key=sab_bit.get)

    def sabs_of(self, i: int) -> list[str]:
        mask, names = self.sab_mask[i], []
        while mask:
            low = mask & -mask
            names.append(self.sab_names[low.bit_length() - 1])
            mask ^= low
        return sorted(names)


def _definitions(meta_dir: Path, kept: _KeptConcepts, names: _Names, sabs: frozenset | None,
                 keep_suppressed: bool, report: ParseReport) -> list[str]:
    """Pass 3 (MRDEF): the first kept definition of each named concept ("" if none)."""
    definitions = [""] * len(kept.cuis)
    meta = open_meta(meta_dir, "MRDEF.RRF", report)
    i_cui, i_sab, i_def, i_sup = (meta.index(c) for c in ("CUI", "SAB", "DEF", "SUPPRESS"))
    for f in meta.rows:
        i = kept.code.get(f[i_cui])
        if i is None or names.rank[i] < 0 or definitions[i]:
            continue
        if (sabs is None or f[i_sab] in sabs) and (
                keep_suppressed or i_sup < 0 or f[i_sup] not in SUPPRESSED):
            definitions[i] = f[i_def]
    return definitions


def _add_nodes(g: nx.MultiDiGraph, kept: _KeptConcepts, names: _Names, definitions: list[str]) -> None:
    def records():
        for i in names.order:
            name, combo = names.name[i], kept.combo[i]
            lower = name.lower()
            aliases = sorted(a for a in names.aliases[i] if a.lower() != lower)
            names.aliases[i] = None  # free as we go: the node's list replaces it
            yield kept.cuis[i], {"name": name, "aliases": aliases, "tuis": kept.tuis[combo],
                                 "stys": kept.stys[combo], "sabs": names.sabs_of(i),
                                 "definition": definitions[i]}
    g.add_nodes_from(records())


class _Relations:
    """Pass 4 (MRREL): kept rows as int32 arrays of (CUI1 code, CUI2 code, label id)."""

    def __init__(self, meta_dir: Path, node_code: dict[str, int], rels: frozenset | None,
                 sabs: frozenset | None, keep_suppressed: bool, report: ParseReport):
        self.cui1, self.cui2, self.label = array("i"), array("i"), array("i")
        self.labels = _Interner()  # (REL, RELA, SAB)
        meta = open_meta(meta_dir, "MRREL.RRF", report)
        i_c1, i_c2, i_rel, i_rela, i_sab, i_sup = (
            meta.index(c) for c in ("CUI1", "CUI2", "REL", "RELA", "SAB", "SUPPRESS"))
        label_id = self.labels.id
        for f in meta.rows:
            a, b = node_code.get(f[i_c1]), node_code.get(f[i_c2])
            if a is None or b is None or a == b:
                continue
            rel, sab = f[i_rel], f[i_sab]
            if (rels is not None and rel not in rels) or (sabs is not None and sab not in sabs):
                continue
            if not keep_suppressed and i_sup >= 0 and f[i_sup] in SUPPRESSED:
                continue
            self.cui1.append(a)
            self.cui2.append(b)
            self.label.append(label_id((rel, f[i_rela] if i_rela >= 0 else "", sab)))


def _add_edges(g: nx.MultiDiGraph, kept: _KeptConcepts, relations: _Relations, table) -> None:
    """Orient every row, keep the first row of each (u, v, key), add edges in row order."""
    labels = relations.labels.values
    orientations = [orient(rel, rela, table) for rel, rela, _ in labels]
    keys = _Interner()  # edge key "REL:RELA:SAB" of the stored edge
    key_of_label = np.array([keys.id(f"{o.rel}:{o.rela}:{sab}")
                             for o, (_, _, sab) in zip(orientations, labels)], dtype=np.int64)
    attrs = {}
    for o, (_, _, sab) in zip(orientations, labels):
        attrs.setdefault(f"{o.rel}:{o.rela}:{sab}", {"rel": o.rel, "rela": o.rela, "sab": sab})
    turn_of_label = np.array([o.turn is Turn.INVERTED for o in orientations], dtype=bool)
    symmetric_label = np.array([o.turn is Turn.FROM_SMALLER_CUI for o in orientations], dtype=bool)
    cui1 = np.frombuffer(relations.cui1, dtype=np.int32)
    cui2 = np.frombuffer(relations.cui2, dtype=np.int32)
    label = np.frombuffer(relations.label, dtype=np.int32)
    if len(label) == 0:
        return
    # string order of CUIs, for "symmetric relations point from the smaller CUI"
    order_rank = np.empty(len(kept.cuis), dtype=np.int64)
    order_rank[np.argsort(np.array(kept.cuis))] = np.arange(len(kept.cuis))
    turned = turn_of_label[label] | (symmetric_label[label] & (order_rank[cui1] < order_rank[cui2]))
    del order_rank
    u = np.where(turned, cui1, cui2)
    v = np.where(turned, cui2, cui1)
    key = key_of_label[label]
    del turned
    row = np.arange(len(key), dtype=np.int64)
    by_edge = np.lexsort((row, key, v, u))  # within one (u, v, key) the first row comes first
    first = np.ones(len(by_edge), dtype=bool)
    su, sv, sk = u[by_edge], v[by_edge], key[by_edge]
    first[1:] = (su[1:] != su[:-1]) | (sv[1:] != sv[:-1]) | (sk[1:] != sk[:-1])
    del su, sv, sk
    keep_rows = np.sort(by_edge[first])
    del by_edge, first, row
    cuis, key_names = kept.cuis, keys.values
    for start in range(0, len(keep_rows), EDGE_CHUNK):
        chunk = keep_rows[start:start + EDGE_CHUNK]
        g.add_edges_from((cuis[a], cuis[b], key_names[k], attrs[key_names[k]])
                         for a, b, k in zip(u[chunk].tolist(), v[chunk].tolist(), key[chunk].tolist()))


def build_graph(meta_dir: str | Path | None = None, sabs: Iterable[str] | None = None,
                tuis: Iterable[str] | None = CHEST_TUIS, languages: Iterable[str] = ("ENG",),
                cuis: Iterable[str] | None = None, rels: Iterable[str] | None = DEFAULT_RELS,
                keep_suppressed: bool = False, max_aliases: int = 64,
                report: ParseReport | None = None) -> nx.MultiDiGraph:
    """Stream a UMLS release (or the bundled subset) into a filtered concept graph.

    sabs: source vocabularies kept for names and relations (None: all). tuis: semantic
    types a concept needs at least one of (None: all; default: ``CHEST_TUIS``).
    cuis: allow-list of concepts. rels: REL values kept (None: all). Files are read one row
    at a time; memory follows the filtered graph (see the module docstring).
    """
    meta_dir = Path(meta_dir) if meta_dir is not None else bundled_meta_dir()
    report = report if report is not None else ParseReport()
    sabs, tuis = (frozenset(sabs) if sabs else None), (frozenset(tuis) if tuis else None)
    allow, languages = (frozenset(cuis) if cuis else None), frozenset(languages)
    rels = frozenset(rels) if rels else None
    collecting = gc.isenabled()
    gc.disable()  # millions of long-lived containers: repeated full collections cost minutes
    try:
        kept = _KeptConcepts(meta_dir, allow, tuis, report)
        names = _Names(meta_dir, kept, sabs, languages, keep_suppressed, max_aliases, report)
        definitions = _definitions(meta_dir, kept, names, sabs, keep_suppressed, report)
        g = nx.MultiDiGraph()
        _add_nodes(g, kept, names, definitions)
        # from here on only concepts with a node matter: code of each, by CUI
        node_code = {kept.cuis[i]: i for i in names.order}
        del definitions, names, kept.code, kept.combo
        mrdoc = read_mrdoc_inverses(meta_dir, report)
        relations = _Relations(meta_dir, node_code, rels, sabs, keep_suppressed, report)
        del node_code
        table = resolve_inverses(mrdoc, (r for r, _, _ in relations.labels.values),
                                 (a for _, a, _ in relations.labels.values))
        warning = assumption_warning(meta_dir, table, has_mrdoc=mrdoc is not None)
        if warning:
            log.warning("%s", warning)
        _add_edges(g, kept, relations, table)
        del relations, kept
    finally:
        if collecting:
            gc.enable()
    g.graph.update(meta_dir=str(meta_dir), parse_report=report.to_dict(),
                   filters={"sabs": sorted(sabs) if sabs else None,
                            "tuis": sorted(tuis) if tuis else None,
                            "languages": sorted(languages), "rels": sorted(rels) if rels else None,
                            "cuis": len(allow) if allow else None})
    g.graph["fingerprint"] = graph_fingerprint(g)
    report.log_summary()
    return g
