"""Graph building: direction of REL, inverse collapsing, filters, save/load, k-hop."""
import gzip
import hashlib
import importlib.util
from pathlib import Path

import pytest

import knowledge
from knowledge.relations import InverseTable, canonical_edge

FILES = {
    "MRCONSO.RRF": [
        "C1|ENG|P|L1|PF|S1|Y|A1||||SRC|PT|1|pleural effusion|0|N||",
        "C1|ENG|S|L2|PF|S2|N|A2||||SRC|SY|1|effusion|0|N||",
        "C1|SPA|S|L3|PF|S3|N|A3||||SRC|SY|1|derrame pleural|0|N||",
        "C1|ENG|S|L4|PF|S4|N|A4||||SRC|SY|1|obsolete name|0|O||",
        "C2|ENG|P|L5|PF|S5|Y|A5||||SRC|PT|2|loculated pleural effusion|0|N||",
        "C3|ENG|P|L6|PF|S6|Y|A6||||OTHER|PT|3|pleura|0|N||",
        "C4|ENG|P|L7|PF|S7|Y|A7||||SRC|PT|4|aspirin|0|N||",
    ],
    "MRSTY.RRF": ["C1|T047|B|Disease or Syndrome|AT1||", "C2|T047|B|Disease or Syndrome|AT2||",
                  "C3|T023|A|Body Part|AT3||", "C4|T109|A|Organic Chemical|AT4||"],
    "MRREL.RRF": [
        # C2 is a child of C1, written in both directions as UMLS does
        "C1||CUI|CHD|C2||CUI|isa|R1||SRC|SRC|||N||",
        "C2||CUI|PAR|C1||CUI|inverse_isa|R2||SRC|SRC|||N||",
        "C1||CUI|RO|C3||CUI|location_of|R3||SRC|SRC|||N||",
        "C3||CUI|RO|C1||CUI|has_location|R4||SRC|SRC|||N||",
    ],
    "MRDOC.RRF": ["RELA|isa|rela_inverse|inverse_isa|", "RELA|inverse_isa|rela_inverse|isa|",
                  "RELA|has_location|rela_inverse|location_of|", "RELA|location_of|rela_inverse|has_location|"],
}


@pytest.fixture
def meta(tmp_path):
    for name, rows in FILES.items():
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    return tmp_path


def test_rel_is_relation_of_cui2_to_cui1_and_inverses_collapse(meta):
    g = knowledge.build_graph(meta, tuis=None)

    assert g.number_of_edges() == 2
    assert g.has_edge("C2", "C1", "CHD:isa:SRC")          # loculated effusion isa effusion
    assert g.has_edge("C1", "C3", "RO:has_location:SRC")  # effusion has_location pleura


def test_canonical_edge_is_the_same_for_both_directions():
    inv = InverseTable(rel={"CHD": "PAR", "PAR": "CHD"}, rela={"isa": "inverse_isa", "inverse_isa": "isa"})
    assert canonical_edge("C1", "CHD", "C2", "isa", inv) == canonical_edge("C2", "PAR", "C1", "inverse_isa", inv)


def _body_digest(g, path: Path) -> str:
    """sha256 of a saved graph's node and edge lines (order and attributes included)."""
    knowledge.save_graph(g, path)
    with gzip.open(path, "rb") as f:
        f.readline()  # header: build paths and parse counts
        return hashlib.sha256(f.read()).hexdigest()[:16]


def test_array_builder_writes_the_graph_the_row_by_row_builder_wrote(tmp_path):
    # A release from tools/bench_rrf_scale.py (fixed seed, with MRDOC); the digests were taken
    # from the row-by-row builder of commit e8a6290, before the builder kept arrays.
    spec = importlib.util.spec_from_file_location(
        "bench_rrf_scale", Path(__file__).resolve().parents[2] / "tools" / "bench_rrf_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.generate(tmp_path / "meta", n_conso=20_000, n_rel=30_000, seed=0)

    chest = knowledge.build_graph(tmp_path / "meta")
    every_type = knowledge.build_graph(tmp_path / "meta", tuis=None)

    assert (chest.number_of_nodes(), chest.number_of_edges()) == (3691, 6386)
    assert _body_digest(chest, tmp_path / "chest.jsonl.gz") == "3451ef45edb09481"
    assert _body_digest(every_type, tmp_path / "all.jsonl.gz") == "042cf9e7633254f6"


def test_filters_language_suppression_sab_tui_and_allow_list(meta):
    g = knowledge.build_graph(meta)  # default chest TUIs drop the drug

    assert set(g) == {"C1", "C2", "C3"}
    assert g.nodes["C1"]["name"] == "pleural effusion"
    assert g.nodes["C1"]["aliases"] == ["effusion"]  # no Spanish, no suppressed name
    assert set(knowledge.build_graph(meta, sabs=["SRC"])) == {"C1", "C2"}
    assert set(knowledge.build_graph(meta, cuis=["C1", "C3"])) == {"C1", "C3"}


def test_save_load_round_trip_keeps_fingerprint(bundled_graph, tmp_path):
    path = knowledge.save_graph(bundled_graph, tmp_path / "g.jsonl.gz")

    loaded = knowledge.load_graph(path)

    assert loaded.graph["fingerprint"] == bundled_graph.graph["fingerprint"]
    assert dict(loaded.nodes(data="name")) == dict(bundled_graph.nodes(data="name"))
    assert sorted(loaded.edges(keys=True)) == sorted(bundled_graph.edges(keys=True))


def test_k_hop_grows_with_k(bundled_graph):
    effusion = "C2073625"
    one, two = knowledge.k_hop(bundled_graph, [effusion], 1), knowledge.k_hop(bundled_graph, [effusion], 2)

    assert effusion in one and "C0747639" in one  # loculated pleural effusion
    assert set(one) < set(two)


def test_bundled_subset_has_a_few_hundred_concepts_and_no_malformed_rows():
    report = knowledge.ParseReport()
    g = knowledge.build_graph(tuis=None, report=report)

    assert 200 <= g.number_of_nodes() <= 400
    assert report.total_skipped == 0
    assert knowledge.graph_stats(g)["edges"] > 200
