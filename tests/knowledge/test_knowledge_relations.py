"""Relation direction: every planted directed fact is stored once, in the documented direction,
with MRDOC (its inverse pairs) and without it (the built-in table, one loud WARNING)."""
import logging

import pytest

import knowledge
from knowledge.relations import BUILTIN_REL_INVERSE, BUILTIN_RELA_INVERSE, InverseTable, canonical_edge
from umls_release_writer import PLANTED, write_release


def _edges(g):
    return sorted((u, v, k) for u, v, k in g.edges(keys=True))


@pytest.mark.parametrize("with_mrdoc", [True, False], ids=["mrdoc", "no-mrdoc"])
def test_every_planted_fact_is_stored_exactly_once_in_the_documented_direction(tmp_path, with_mrdoc):
    release = write_release(tmp_path, with_mrdoc=with_mrdoc)

    g = knowledge.build_graph(release.meta_dir, rels=None)  # all RELs, AQ included

    assert _edges(g) == sorted((f.subject, f.object, f.key) for f in PLANTED)


def test_without_mrdoc_one_warning_names_the_assumed_inverses(tmp_path, caplog):
    release = write_release(tmp_path, with_mrdoc=False)

    with caplog.at_level(logging.WARNING, logger="knowledge"):
        knowledge.build_graph(release.meta_dir)

    warnings = [r.getMessage() for r in caplog.records if "MRDOC" in r.getMessage()]
    assert len(warnings) == 1
    assert "MRDOC.RRF not found" in warnings[0]
    for assumed in ("REL CHD<->PAR", "RELA finding_site_of<->has_finding_site", "RELA inverse_isa<->isa",
                    "RELA part_of<->has_part"):
        assert assumed in warnings[0]
    assert "PAR<->CHD" not in warnings[0]  # each pair named once


def test_with_a_complete_mrdoc_nothing_is_assumed(tmp_path, caplog):
    release = write_release(tmp_path, with_mrdoc=True)

    with caplog.at_level(logging.WARNING, logger="knowledge"):
        knowledge.build_graph(release.meta_dir)

    assert not [r for r in caplog.records if "inverse" in r.getMessage()]


def test_par_with_inverse_isa_becomes_chd_isa_never_chd_inverse_isa():
    builtin = InverseTable(rel=dict(BUILTIN_REL_INVERSE), rela=dict(BUILTIN_RELA_INVERSE))

    # row C2|PAR|C1|inverse_isa reads "C1 PAR C2": C1 is the parent, C2 isa C1
    assert canonical_edge("C2", "PAR", "C1", "inverse_isa", builtin) == ("C2", "C1", "CHD", "isa")
    assert canonical_edge("C1", "CHD", "C2", "isa", builtin) == ("C2", "C1", "CHD", "isa")


def test_both_directions_of_a_rela_pair_give_the_same_edge():
    builtin = InverseTable(rel=dict(BUILTIN_REL_INVERSE), rela=dict(BUILTIN_RELA_INVERSE))

    site_of = canonical_edge("C7", "RO", "C4", "finding_site_of", builtin)   # C4 finding_site_of C7
    has_site = canonical_edge("C4", "RO", "C7", "has_finding_site", builtin)  # C7 has_finding_site C4

    assert site_of == has_site == ("C4", "C7", "RO", "finding_site_of")


def test_a_label_with_no_known_inverse_is_stored_as_read_and_named(tmp_path, caplog):
    release = write_release(tmp_path, with_mrdoc=False)
    with open(release.meta_dir / "MRREL.RRF", "a") as f:
        f.write("C0000001||CUI|RO|C0000012||CUI|drains_to_somewhere|||SRC|SRC|||N||\n")

    with caplog.at_level(logging.WARNING, logger="knowledge"):
        g = knowledge.build_graph(release.meta_dir)

    assert g.has_edge("C0000012", "C0000001", "RO:drains_to_somewhere:SRC")
    assert any("RELA drains_to_somewhere" in r.getMessage() for r in caplog.records)
