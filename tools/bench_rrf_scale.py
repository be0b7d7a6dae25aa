"""Scale benchmark (not a test): a full-release-shaped UMLS META folder, then build-graph on it.

    # write 16 M MRCONSO + 24 M MRREL rows (~4 M concepts, ~3 M with a chest semantic type)
    nice -n 5 python tools/bench_rrf_scale.py --dir /tmp/rrf_full --conso 16000000 --rel 24000000 --skip-build
    # measure the CLI as a user runs it
    nice -n 5 /usr/bin/time -v python -m kgvlp.cli knowledge build-graph --meta /tmp/rrf_full --out /tmp/rrf_full/g.jsonl.gz
    # or generate and build in this process (peak RSS from ru_maxrss)
    python tools/bench_rrf_scale.py --dir /tmp/rrf_small --conso 800000 --rel 1200000

Field shapes follow a UMLS release: MRCONSO's 18 columns with ~30 source vocabularies, a
dozen languages (about 68 % English), 1-27 names per concept (mean 4.3), some differing only
in case, ~3 % suppressed; MRSTY 1-2 types per concept with real STN/STY values, 85 % of
concepts with one of the chest-radiology types; MRDEF for ~8 % of concepts; MRREL's 16
columns with the REL mix of a release (SIB, RO, PAR/CHD, SY, RQ, RB/RN, AQ/QB, RL, XR), most
facts written once per direction with inverse RELAs, in no particular order; MRDOC with the
REL/RELA inverse pairs used (``--no-mrdoc`` leaves it out). The files are written with a fixed
seed, so a size reproduces the same release.
"""
from __future__ import annotations

import argparse
import random
import resource
import time
from pathlib import Path

from knowledge.graph import CHEST_TUIS

CHEST_STYS = {
    "T017": ("A1.2", "Anatomical Structure"), "T019": ("A1.2.2.1", "Congenital Abnormality"),
    "T020": ("A1.2.2.2", "Acquired Abnormality"), "T022": ("A1.2.3", "Body System"),
    "T023": ("A1.2.3.1", "Body Part, Organ, or Organ Component"), "T029": ("A2.1.5.2", "Body Location or Region"),
    "T030": ("A2.1.5.1", "Body Space or Junction"), "T033": ("A2.2", "Finding"),
    "T037": ("B2.3", "Injury or Poisoning"), "T046": ("B2.2.1.2", "Pathologic Function"),
    "T047": ("B2.2.1.2.1", "Disease or Syndrome"), "T060": ("B1.3.1.2", "Diagnostic Procedure"),
    "T061": ("B1.3.1.3", "Therapeutic or Preventive Procedure"), "T074": ("A1.3.1", "Medical Device"),
    "T184": ("A2.2.2", "Sign or Symptom"), "T190": ("A1.2.2", "Anatomical Abnormality"),
    "T191": ("B2.2.1.2.1.2", "Neoplastic Process"),
}
OTHER_STYS = {
    "T109": ("A1.4.1.2.1", "Organic Chemical"), "T121": ("A1.4.1.1.1", "Pharmacologic Substance"),
    "T116": ("A1.4.1.2.1.7", "Amino Acid, Peptide, or Protein"), "T204": ("A1.1.3", "Eukaryote"),
    "T028": ("A1.2.3.5", "Gene or Genome"), "T201": ("A2.3", "Clinical Attribute"),
    "T200": ("A1.3.3", "Clinical Drug"), "T081": ("A2.1.3", "Quantitative Concept"),
    "T170": ("A2.4", "Intellectual Product"), "T059": ("B1.3.1.1", "Laboratory Procedure"),
}
assert set(CHEST_STYS) == CHEST_TUIS
SABS = ("SNOMEDCT_US", "MSH", "NCI", "MDR", "LNC", "RXNORM", "MEDCPT", "ICD10CM", "MTH", "SCTSPA",
        "MSHSPA", "MSHFRE", "MSHGER", "MSHDUT", "MDRJPN", "MSHPOR", "MSHITA", "CHV", "FMA", "UWDA",
        "OMIM", "HPO", "GO", "ICD10PCS", "CPT", "HCPCS", "MEDLINEPLUS", "NCBI", "DRUGBANK", "ATC")
LANGS = ("ENG",) * 68 + ("SPA",) * 8 + ("FRE",) * 4 + ("GER",) * 4 + ("JPN",) * 4 + ("DUT",) * 3 \
    + ("POR",) * 3 + ("ITA",) * 3 + ("CZE",) * 2 + ("RUS",) * 1
TTYS = ("PT", "SY", "FN", "MH", "ENTRY", "LLT", "PN", "SCD", "IN", "LN", "OP", "AB")
NAME_COUNTS = (1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 6, 8, 12, 6)  # per concept, mean 4
# (REL, RELA, inverse REL, inverse RELA, share of facts); a fact is two rows unless one-way
REL_MIX = (
    ("SIB", "", "SIB", "", 22), ("RO", "has_finding_site", "RO", "finding_site_of", 6),
    ("RO", "has_associated_morphology", "RO", "associated_morphology_of", 4),
    ("RO", "has_location", "RO", "location_of", 3), ("RO", "", "RO", "", 8),
    ("RO", "associated_with", "RO", "associated_with", 3), ("RO", "has_method", "RO", "method_of", 2),
    ("CHD", "isa", "PAR", "inverse_isa", 20), ("CHD", "", "PAR", "", 8),
    ("SY", "", "SY", "", 8), ("RQ", "mapped_to", "RQ", "mapped_from", 4), ("RQ", "", "RQ", "", 2),
    ("RN", "", "RB", "", 3), ("RN", "has_part", "RB", "part_of", 2), ("AQ", "", "QB", "", 3),
    ("RL", "same_as", "RL", "same_as", 1), ("XR", "", "XR", "", 1),
)
SYLLABLES = ("pul", "mo", "nar", "car", "di", "ac", "pleu", "ral", "ef", "fu", "sion", "lo", "bar",
             "in", "fil", "trate", "ate", "lec", "ta", "sis", "ede", "ma", "nod", "ule", "gran", "u",
             "ver", "te", "bra", "tho", "rax", "me", "dia", "sti", "num", "hi", "lum", "ar", "te", "ry")
WORDS = tuple(sorted({"".join(random.Random(k).choices(SYLLABLES, k=1 + k % 4)) for k in range(6000)}))
QUALIFIERS = ("of", "the", "left", "right", "upper", "lower", "acute", "chronic", "NOS", "(disorder)",
              "(finding)", "[Ambiguous]", "structure", "entire", "unspecified", "bilateral")


def _name(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8)))]
    if rng.random() < 0.4:
        words.insert(rng.randrange(len(words) + 1), rng.choice(QUALIFIERS))
    return " ".join(words)


def _concept_types(rng: random.Random) -> list[str]:
    first = rng.choice(sorted(CHEST_STYS)) if rng.random() < 0.85 else rng.choice(sorted(OTHER_STYS))
    if rng.random() < 0.12:
        second = rng.choice(sorted(CHEST_STYS) + sorted(OTHER_STYS))
        return [first] if second == first else [first, second]
    return [first]


def _write_concepts(out: Path, n_conso: int, rng: random.Random) -> int:
    """MRSTY, MRCONSO, MRDEF in CUI order; returns the number of concepts written."""
    stys = {**CHEST_STYS, **OTHER_STYS}
    rows = cui_no = 0
    with open(out / "MRSTY.RRF", "w") as sty, open(out / "MRCONSO.RRF", "w") as conso, \
            open(out / "MRDEF.RRF", "w") as dfn:
        while rows < n_conso:
            cui = f"C{cui_no:07d}"
            for t, tui in enumerate(_concept_types(rng)):
                stn, sty_name = stys[tui]
                sty.write(f"{cui}|{tui}|{stn}|{sty_name}|AT{rng.randrange(10**8):08d}|{256 if t else ''}|\n")
            names, previous = min(rng.choice(NAME_COUNTS) + (rng.random() < 0.02) * 15, n_conso - rows), ""
            lines = []
            for k in range(names):
                sab, lat = rng.choice(SABS), rng.choice(LANGS)
                if previous and rng.random() < 0.15:
                    text = previous.upper() if rng.random() < 0.5 else previous.capitalize()
                else:
                    text = _name(rng)
                    if lat != "ENG" and rng.random() < 0.3:
                        text += " é" if lat in ("FRE", "SPA", "POR") else " ü"
                previous = text
                atom = rows + k
                suppress = rng.choices("NOEY", (97, 1.5, 1, 0.5))[0]
                lines.append(
                    f"{cui}|{lat}|{'P' if k == 0 else 'S'}|L{atom % 9_000_000:07d}|{'PF' if rng.random() < 0.8 else 'VO'}|"
                    f"S{atom:07d}|{'Y' if k == 0 or rng.random() < 0.3 else 'N'}|A{atom:08d}|"
                    f"{rng.randrange(10**9) if rng.random() < 0.5 else ''}|{rng.randrange(10**9) if rng.random() < 0.6 else ''}|"
                    f"{'D%06d' % rng.randrange(10**6) if sab.startswith('MSH') else ''}|{sab}|{rng.choice(TTYS)}|"
                    f"{rng.randrange(10**8)}|{text}|{rng.choice('0000349')}|{suppress}|{'256' if rng.random() < 0.1 else ''}|\n")
            conso.write("".join(lines))
            rows += names
            if rng.random() < 0.08:
                dfn.write(f"{cui}|A{rows:08d}|AT{rng.randrange(10**8):08d}||{rng.choice(SABS[:8])}|"
                          f"{' '.join(_name(rng) for _ in range(rng.randrange(2, 8)))}.|N||\n")
            cui_no += 1
    return cui_no


def _write_relations(out: Path, n_rel: int, n_cui: int, rng: random.Random) -> None:
    weights = [m[4] for m in REL_MIX]
    rows = rui = 0
    with open(out / "MRREL.RRF", "w") as f:
        lines = []
        while rows < n_rel:
            rel, rela, inv_rel, inv_rela, _ = rng.choices(REL_MIX, weights)[0]
            a = rng.randrange(n_cui)
            b = min(max(a + rng.randrange(-5000, 5000), 0), n_cui - 1) if rng.random() < 0.5 else rng.randrange(n_cui)
            sab, sup = rng.choice(SABS[:8]), rng.choices("NOE", (98, 1.5, 0.5))[0]
            stype = rng.choice(("SCUI", "AUI", "CUI", "SDUI"))
            rg = rng.choice(("", "", "0", "1", "2"))
            aui1, aui2 = (f"A{rng.randrange(10**8):08d}", f"A{rng.randrange(10**8):08d}") if stype == "AUI" else ("", "")
            # row CUI1|REL|CUI2|RELA reads "CUI2 REL CUI1": the fact "b rel a" is a|rel|b|rela
            lines.append(f"C{a:07d}|{aui1}|{stype}|{rel}|C{b:07d}|{aui2}|{stype}|{rela}|R{rui:09d}|"
                         f"{rng.randrange(10**9) if rng.random() < 0.3 else ''}|{sab}|{sab}|{rg}|"
                         f"{rng.choice(('', 'Y', 'N'))}|{sup}||\n")
            rows, rui = rows + 1, rui + 1
            if rows < n_rel and rng.random() < 0.95:  # the same fact from the other side
                lines.append(f"C{b:07d}|{aui2}|{stype}|{inv_rel}|C{a:07d}|{aui1}|{stype}|{inv_rela}|R{rui:09d}|"
                             f"|{sab}|{sab}|{rg}||{sup}||\n")
                rows, rui = rows + 1, rui + 1
            if len(lines) >= 100_000:
                rng.shuffle(lines)  # the two rows of a fact are not adjacent in a release
                f.write("".join(lines))
                lines = []
        rng.shuffle(lines)
        f.write("".join(lines))


def _write_mrdoc(out: Path) -> None:
    rel_pairs = {(m[0], m[2]) for m in REL_MIX}
    rela_pairs = {(m[1], m[3]) for m in REL_MIX if m[1]}
    with open(out / "MRDOC.RRF", "w") as f:
        for a, b in sorted(rel_pairs | {(b, a) for a, b in rel_pairs}):
            f.write(f"REL|{a}|rel_inverse|{b}|\n")
        for a, b in sorted(rela_pairs | {(b, a) for a, b in rela_pairs}):
            f.write(f"RELA|{a}|rela_inverse|{b}|\n")


def generate(out: Path, n_conso: int, n_rel: int, seed: int = 0, mrdoc: bool = True) -> int:
    """Write the release into ``out``; returns the number of concepts."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_cui = _write_concepts(out, n_conso, rng)
    _write_relations(out, n_rel, n_cui, rng)
    if mrdoc:
        _write_mrdoc(out)
    elif (out / "MRDOC.RRF").exists():
        (out / "MRDOC.RRF").unlink()
    return n_cui


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conso", type=int, default=16_000_000)
    ap.add_argument("--rel", type=int, default=24_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/rrf_bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mrdoc", action="store_true", help="leave MRDOC.RRF out")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--skip-build", action="store_true", help="only write the release")
    args = ap.parse_args()
    if not args.skip_generate:
        t = time.perf_counter()
        n_cui = generate(args.dir, args.conso, args.rel, args.seed, mrdoc=not args.no_mrdoc)
        print(f"generated {n_cui} concepts in {time.perf_counter() - t:.0f}s -> {args.dir}")
    if args.skip_build:
        return
    import knowledge

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
