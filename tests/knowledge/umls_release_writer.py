"""Writes small UMLS releases with planted facts and malformed lines, for the reader's tests.

Written from the UMLS Reference Manual, not from knowledge/: it knows the column count of
each file, that MRREL row ``CUI1|REL|CUI2|RELA`` reads "CUI2 REL CUI1", and the inverse of
each label it plants. Each planted fact is given in the direction docs/knowledge.md
("Direction") says it is stored in; the release writes it as UMLS does: once per direction,
or only one of the two rows (many sources ship one side only).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

COLUMN_COUNT = {"MRCONSO.RRF": 18, "MRREL.RRF": 16, "MRSTY.RRF": 6, "MRDEF.RRF": 8, "MRDOC.RRF": 4}
REL_INVERSE = {"CHD": "PAR", "PAR": "CHD", "RN": "RB", "RB": "RN", "AQ": "QB", "QB": "AQ",
               "RO": "RO", "RQ": "RQ"}
RELA_INVERSE = {"isa": "inverse_isa", "inverse_isa": "isa", "": "",
                "finding_site_of": "has_finding_site", "has_finding_site": "finding_site_of",
                "has_location": "location_of", "location_of": "has_location",
                "has_part": "part_of", "part_of": "has_part",
                "mapped_from": "mapped_to", "mapped_to": "mapped_from",
                "associated_with": "associated_with"}


@dataclasses.dataclass(frozen=True)
class Fact:
    """"subject REL/RELA object", in the documented stored direction; ``rows``: which MRREL rows."""

    subject: str
    rel: str
    rela: str
    object: str
    sab: str = "SRC"
    rows: str = "both"  # "both", "stated" (only "object|REL|subject|RELA") or "inverse"

    @property
    def key(self) -> str:
        return f"{self.rel}:{self.rela}:{self.sab}"


CONCEPTS = {  # CUI: (name, TUI): all chest types, so the default filter keeps every one
    "C0000001": ("pleural effusion", "T047"), "C0000002": ("loculated pleural effusion", "T047"),
    "C0000003": ("pleura", "T023"), "C0000004": ("lung", "T023"), "C0000005": ("lung lobe", "T023"),
    "C0000006": ("consolidation", "T033"), "C0000007": ("pneumonia", "T047"),
    "C0000008": ("opacity", "T033"), "C0000009": ("atelectasis", "T047"),
    "C0000010": ("chest tube", "T074"), "C0000011": ("rib fracture", "T037"),
    "C0000012": ("thoracic cavity", "T030"),
}
PLANTED = (
    # directed RELs are stored as CHD / RN / AQ; the RELA follows the REL
    Fact("C0000002", "CHD", "isa", "C0000001"),
    Fact("C0000007", "CHD", "isa", "C0000006", rows="inverse"),          # only the PAR/inverse_isa row
    Fact("C0000009", "CHD", "", "C0000008", sab="MSH"),
    Fact("C0000005", "RN", "", "C0000004", rows="inverse"),              # only the RB row
    Fact("C0000011", "AQ", "", "C0000010", sab="MSH"),
    # under RO/RQ a RELA pair keeps the alphabetically smaller label
    Fact("C0000003", "RO", "finding_site_of", "C0000001"),
    Fact("C0000004", "RO", "finding_site_of", "C0000007", rows="inverse"),  # only has_finding_site
    Fact("C0000006", "RO", "has_location", "C0000004"),
    Fact("C0000004", "RO", "has_part", "C0000005", sab="FMA", rows="inverse"),  # only part_of
    Fact("C0000010", "RQ", "mapped_from", "C0000012", sab="MDR"),
    # symmetric: from the smaller CUI
    Fact("C0000008", "RO", "", "C0000009"),
    Fact("C0000006", "RO", "associated_with", "C0000008"),
)
MALFORMED_KINDS = ("short", "long", "invalid_utf8", "no_trailing_bar", "blank", "whitespace")


def _row(fields: list[str]) -> bytes:
    return ("|".join(fields) + "|").encode()


def _filler(name: str, k: int) -> list[str]:
    """A well-formed row of ``name`` about a concept not in the release (never kept)."""
    fields = [""] * COLUMN_COUNT[name]
    fields[0] = f"C9{k:06d}" if name != "MRDOC.RRF" else "EXPANDED_FORM"
    return fields


def malformed(name: str, kind: str, k: int) -> bytes:
    fields = _filler(name, k)
    if kind == "short":
        return _row(fields[:-1])
    if kind == "long":
        return _row(fields + ["extra"])
    if kind == "invalid_utf8":
        return _row(fields[:1]) + b"\xff\xfe" + _row(fields[1:])[:-1] + b"|"
    if kind == "no_trailing_bar":  # a non-empty last field, else it would read as one field short
        return _row(fields[:-1] + ["256"])[:-1]
    return b"" if kind == "blank" else b" \t "


def _rrel(fact: Fact) -> list[bytes]:
    stated = [fact.object, "", "CUI", fact.rel, fact.subject, "", "CUI", fact.rela,
              "", "", fact.sab, fact.sab, "", "", "N", ""]
    inverse = [fact.subject, "", "CUI", REL_INVERSE[fact.rel], fact.object, "", "CUI",
               RELA_INVERSE[fact.rela], "", "", fact.sab, fact.sab, "", "", "N", ""]
    return {"both": [_row(stated), _row(inverse)], "stated": [_row(stated)],
            "inverse": [_row(inverse)]}[fact.rows]


@dataclasses.dataclass
class Release:
    meta_dir: Path
    malformed_lines: dict[str, list[int]]  # file -> 1-based line numbers of malformed lines


def write_release(meta_dir: Path, with_mrdoc: bool, malformed_per_kind: int = 0) -> Release:
    """Write the planted release; ``malformed_per_kind`` lines of each kind go into every file."""
    meta_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[bytes]] = {
        "MRSTY.RRF": [_row([c, tui, "A1", "Type", f"AT{i}", ""]) for i, (c, (_, tui)) in enumerate(CONCEPTS.items())],
        "MRCONSO.RRF": [_row([c, "ENG", "P", f"L{i}", "PF", f"S{i}", "Y", f"A{i}", "", "", "", "SRC", "PT",
                              str(i), name, "0", "N", ""]) for i, (c, (name, _)) in enumerate(CONCEPTS.items())],
        "MRDEF.RRF": [_row(["C0000001", "A0", "AT0", "", "SRC", "Fluid in the pleural space.", "N", ""])],
        "MRREL.RRF": [r for fact in PLANTED for r in _rrel(fact)],
    }
    if with_mrdoc:
        rows["MRDOC.RRF"] = (
            [_row(["REL", a, "rel_inverse", b]) for a, b in REL_INVERSE.items()]
            + [_row(["RELA", a, "rela_inverse", b]) for a, b in RELA_INVERSE.items() if a])
    lines: dict[str, list[int]] = {}
    for name, good in rows.items():
        out, bad_at, k = [], [], 0
        bad = [malformed(name, kind, k := k + 1) for kind in MALFORMED_KINDS for _ in range(malformed_per_kind)]
        # interleave: one malformed line after every good line, the rest at the end
        for i in range(max(len(good), len(bad))):
            if i < len(good):
                out.append(good[i])
            if i < len(bad):
                out.append(bad[i])
                bad_at.append(len(out))
        (meta_dir / name).write_bytes(b"\n".join(out) + b"\n")
        lines[name] = bad_at
    return Release(meta_dir, lines)
