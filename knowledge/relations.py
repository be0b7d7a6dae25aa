"""Which way a UMLS relation is stored: inverse tables (MRDOC or built-in) and edge orientation.

MRREL's REL and RELA give the relation of CUI2 to CUI1, so row ``CUI1|REL|CUI2|RELA`` reads
"CUI2 REL CUI1". UMLS writes most facts twice, once per direction (``A CHD B`` and
``B PAR A``). To store each fact once, every (REL, RELA) is given one orientation:

* a REL with a distinct inverse (PAR/CHD, RB/RN, AQ/QB) is stored as CHD, RN or AQ (for
  other pairs named in MRDOC: the alphabetically smaller REL), its RELA replaced by the
  RELA's inverse when the row is turned round (``PAR/inverse_isa`` becomes ``CHD/isa``);
* under a symmetric REL (RO, RQ, SY, SIB, RL, XR, RU), a RELA with a distinct inverse keeps
  the alphabetically smaller label (``has_location`` over ``location_of``);
* a symmetric REL with no RELA or a self-inverse RELA points from the smaller CUI;
* a label whose inverse is unknown is stored as read, never turned round: turning it round
  would need an inverse label that nobody gave (the build WARNING lists such labels).

Inverses come from MRDOC.RRF (``REL … rel_inverse`` and ``RELA … rela_inverse`` rows).
Without MRDOC, or for labels MRDOC does not mention, the built-in tables below are used, and
for RELA labels in neither, the UMLS naming patterns ``has_X``/``X_of`` and
``X``/``inverse_X`` when both labels occur in the release; the build logs one WARNING
naming every inverse it assumed this way.
"""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Iterable

from knowledge.rrf import ParseReport, find_file, read_meta

PREFERRED_REL = ("CHD", "RN", "AQ")
SYMMETRIC_REL = ("RO", "RQ", "SY", "SIB", "RL", "XR", "RU")
_DIRECTED_REL_PAIRS = (("PAR", "CHD"), ("RB", "RN"), ("AQ", "QB"))

# Standard RELA inverse pairs of UMLS releases (as listed in MRDOC), used when MRDOC is absent.
_RELA_PAIRS = (
    ("isa", "inverse_isa"), ("part_of", "has_part"), ("has_finding_site", "finding_site_of"),
    ("has_location", "location_of"), ("has_associated_morphology", "associated_morphology_of"),
    ("has_causative_agent", "causative_agent_of"), ("has_pathological_process", "pathological_process_of"),
    ("has_method", "method_of"), ("has_procedure_site", "procedure_site_of"),
    ("has_direct_procedure_site", "direct_procedure_site_of"),
    ("has_indirect_procedure_site", "indirect_procedure_site_of"),
    ("has_direct_morphology", "direct_morphology_of"), ("has_interpretation", "interpretation_of"),
    ("interprets", "is_interpreted_by"), ("has_component", "component_of"), ("has_member", "member_of"),
    ("mapped_to", "mapped_from"), ("has_manifestation", "manifestation_of"), ("due_to", "cause_of"),
    ("occurs_after", "occurs_before"), ("has_clinical_course", "clinical_course_of"),
    ("has_severity", "severity_of"), ("has_laterality", "laterality_of"),
    ("has_finding_method", "finding_method_of"), ("has_finding_context", "finding_context_of"),
    ("has_focus", "focus_of"), ("has_associated_finding", "associated_finding_of"),
    ("has_associated_procedure", "associated_procedure_of"), ("has_temporal_context", "temporal_context_of"),
    ("has_subject_relationship_context", "subject_relationship_context_of"),
    ("has_procedure_context", "procedure_context_of"), ("has_episodicity", "episodicity_of"),
    ("has_priority", "priority_of"), ("has_access", "access_of"), ("has_approach", "approach_of"),
    ("has_direct_device", "direct_device_of"), ("has_indirect_device", "indirect_device_of"),
    ("has_procedure_device", "procedure_device_of"), ("uses_device", "device_used_by"),
    ("uses_substance", "substance_used_by"), ("uses_access_device", "access_device_used_by"),
    ("uses_energy", "energy_used_by"), ("has_specimen", "specimen_of"),
    ("has_specimen_source_topography", "specimen_source_topography_of"),
    ("has_specimen_procedure", "specimen_procedure_of"), ("has_specimen_substance", "specimen_substance_of"),
    ("has_measurement_method", "measurement_method_of"), ("has_intent", "intent_of"),
    ("has_tradename", "tradename_of"), ("has_ingredient", "ingredient_of"), ("has_form", "form_of"),
    ("has_dose_form", "dose_form_of"), ("consists_of", "constitutes"), ("may_treat", "may_be_treated_by"),
    ("may_prevent", "may_be_prevented_by"), ("may_diagnose", "may_be_diagnosed_by"),
    ("has_entire_anatomy_structure", "entire_anatomy_structure_of"),
    ("has_regional_part", "regional_part_of"), ("has_constitutional_part", "constitutional_part_of"),
    ("has_systemic_part", "systemic_part_of"), ("branch_of", "has_branch"),
    ("tributary_of", "has_tributary"), ("surrounds", "surrounded_by"), ("contains", "contained_in"),
    ("replaced_by", "replaces"), ("was_a", "inverse_was_a"), ("moved_to", "moved_from"),
    ("has_sort_version", "sort_version_of"), ("has_permuted_term", "permuted_term_of"),
    ("has_translation", "translation_of"), ("has_mapping_qualifier", "mapping_qualifier_of"),
    ("classifies", "classified_as"), ("has_measured_component", "measured_component_of"),
    ("has_property", "property_of"), ("has_system", "system_of"), ("has_time_aspect", "time_aspect_of"),
    ("has_answer", "answer_to"), ("disease_has_finding", "is_finding_of_disease"),
    ("has_physiologic_effect", "physiologic_effect_of"),
    ("has_mechanism_of_action", "mechanism_of_action_of"),
    ("has_therapeutic_class", "therapeutic_class_of"), ("has_chemical_structure", "chemical_structure_of"),
    ("induces", "induced_by"), ("regulates", "regulated_by"),
    ("positively_regulates", "positively_regulated_by"), ("negatively_regulates", "negatively_regulated_by"),
    ("temporally_follows", "temporally_followed_by"),
)
_SYMMETRIC_RELA = ("associated_with", "same_as", "possibly_equivalent_to", "adjacent_to", "sibling_of")


def _pairs_to_map(pairs: Iterable[tuple[str, str]], symmetric: Iterable[str]) -> dict[str, str]:
    inverse = {label: label for label in symmetric}
    for a, b in pairs:
        inverse[a], inverse[b] = b, a
    return inverse


BUILTIN_REL_INVERSE = _pairs_to_map(_DIRECTED_REL_PAIRS, SYMMETRIC_REL)
BUILTIN_RELA_INVERSE = _pairs_to_map(_RELA_PAIRS, _SYMMETRIC_RELA)


@dataclasses.dataclass
class InverseTable:
    """REL and RELA inverses in force for one build, and which of them were assumed."""

    rel: dict[str, str]
    rela: dict[str, str]
    # (how, "REL" or "RELA", label, inverse): how = "built-in table" or "naming pattern"
    assumed: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    unknown: list[str] = dataclasses.field(default_factory=list)  # "RELA foo": stored as read


def read_mrdoc_inverses(meta_dir: Path, report: ParseReport) -> tuple[dict[str, str], dict[str, str]] | None:
    """(REL inverses, RELA inverses) from MRDOC.RRF, or None when the release has no MRDOC."""
    if find_file(Path(meta_dir), "MRDOC.RRF") is None:
        return None
    rel, rela = {}, {}
    for row in read_meta(meta_dir, "MRDOC.RRF", report):
        if row["DOCKEY"] == "REL" and row["TYPE"] == "rel_inverse":
            rel[row["VALUE"]] = row["EXPL"]
        elif row["DOCKEY"] == "RELA" and row["TYPE"] == "rela_inverse":
            rela[row["VALUE"]] = row["EXPL"]
    return rel, rela


def _pattern_inverse(label: str, seen: set[str]) -> str | None:
    candidates = []
    if label.startswith("has_"):
        candidates.append(label[4:] + "_of")
    if label.endswith("_of"):
        candidates.append("has_" + label[:-3])
    candidates.append(label[8:] if label.startswith("inverse_") else "inverse_" + label)
    return next((c for c in candidates if c in seen and c != label), None)


def resolve_inverses(mrdoc: tuple[dict[str, str], dict[str, str]] | None,
                     rels_seen: Iterable[str], relas_seen: Iterable[str]) -> InverseTable:
    """Inverses for every label seen: MRDOC first, then the built-in tables, then naming patterns."""
    rel_doc, rela_doc = mrdoc if mrdoc is not None else ({}, {})
    table = InverseTable(rel=dict(rel_doc), rela=dict(rela_doc))
    for label in sorted(set(rels_seen)):
        if label in table.rel:
            continue
        if label in BUILTIN_REL_INVERSE:
            table.rel[label] = BUILTIN_REL_INVERSE[label]
            table.assumed.append(("built-in table", "REL", label, table.rel[label]))
        else:
            table.unknown.append(f"REL {label}")
    relas = {label for label in relas_seen if label}
    for label in sorted(relas):
        if label in table.rela:
            continue
        if label in BUILTIN_RELA_INVERSE:
            table.rela[label] = BUILTIN_RELA_INVERSE[label]
            table.assumed.append(("built-in table", "RELA", label, table.rela[label]))
        elif (inverse := _pattern_inverse(label, relas)) is not None:
            table.rela[label] = inverse
            table.assumed.append(("naming pattern, both labels in MRREL", "RELA", label, inverse))
        else:
            table.unknown.append(f"RELA {label}")
    return table


class Turn(enum.Enum):
    """How a row ``CUI1 REL CUI2 RELA`` becomes an edge u -> v."""

    AS_READ = "as_read"              # u = CUI2, v = CUI1 ("CUI2 REL CUI1")
    INVERTED = "inverted"            # u = CUI1, v = CUI2 with REL and RELA replaced by inverses
    FROM_SMALLER_CUI = "symmetric"   # u = the smaller CUI


@dataclasses.dataclass(frozen=True)
class Orientation:
    turn: Turn
    rel: str   # REL of the stored edge
    rela: str  # RELA of the stored edge


def orient(rel: str, rela: str, table: InverseTable) -> Orientation:
    """The stored orientation of every row with this (REL, RELA); see the module docstring."""
    rel_inverse = table.rel.get(rel)
    rela_inverse = table.rela.get(rela) if rela else ""
    if rel_inverse is None:
        return Orientation(Turn.AS_READ, rel, rela)
    if rel_inverse != rel:  # directed REL: it decides, the RELA follows
        preferred = [r for r in (rel, rel_inverse) if r in PREFERRED_REL]
        canonical = preferred[0] if preferred else min(rel, rel_inverse)
        if rel == canonical or rela_inverse is None:
            return Orientation(Turn.AS_READ, rel, rela)
        return Orientation(Turn.INVERTED, rel_inverse, rela_inverse)
    if rela_inverse is None:
        return Orientation(Turn.AS_READ, rel, rela)
    if rela and rela_inverse != rela:
        if rela < rela_inverse:
            return Orientation(Turn.AS_READ, rel, rela)
        return Orientation(Turn.INVERTED, rel, rela_inverse)
    return Orientation(Turn.FROM_SMALLER_CUI, rel, rela)


def canonical_edge(cui1: str, rel: str, cui2: str, rela: str,
                   table: InverseTable) -> tuple[str, str, str, str]:
    """(u, v, rel, rela) reading "u rel v" for MRREL row ``cui1 rel cui2 rela``."""
    o = orient(rel, rela, table)
    turned = o.turn is Turn.INVERTED or (o.turn is Turn.FROM_SMALLER_CUI and cui1 < cui2)
    return (cui1, cui2, o.rel, o.rela) if turned else (cui2, cui1, o.rel, o.rela)


def assumption_warning(meta_dir: Path, table: InverseTable, has_mrdoc: bool) -> str | None:
    """The one WARNING a build logs about inverses it did not read from MRDOC, or None."""
    if not table.assumed and not table.unknown and has_mrdoc:
        return None
    lines = [f"MRDOC.RRF not found in {meta_dir}: relation inverses are ASSUMED, not read from the "
             "release; check them against this release's MRDOC." if not has_mrdoc else
             f"MRDOC.RRF in {meta_dir} does not name the inverse of every label in MRREL."]
    for how in sorted({a[0] for a in table.assumed}):
        pairs = {}
        for _, kind, label, inverse in (a for a in table.assumed if a[0] == how):
            pairs.setdefault((kind, frozenset((label, inverse))), f"{kind} {label}<->{inverse}")
        lines.append(f"assumed from the {how}: " + ", ".join(pairs.values()))
    if table.unknown:
        lines.append("no inverse known, stored as read (a fact also written the other way "
                     "is then stored twice): " + ", ".join(table.unknown))
    return "\n".join(lines)
