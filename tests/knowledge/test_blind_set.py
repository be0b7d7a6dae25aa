"""The committed blind set is well-formed and every sentence is real IU report text."""
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from knowledge.blind_set import BLIND_SET_DIR, LABELS, BlindSetError, load_blind_set


@pytest.fixture(scope="module")
def blind_set():
    return load_blind_set()


@pytest.fixture(scope="module")
def iu_reports():
    """file name → (section label → whitespace-normalised text, MeSH major headings)."""
    import torchxrayvision
    archive = Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"
    reports = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                root = ET.fromstring(tar.extractfile(member).read())
                sections = {a.get("Label"): " ".join((a.text or "").split()) for a in root.iter("AbstractText")}
                majors = [m.text.strip() for m in root.iter("major")]
                reports[Path(member.name).name] = (sections, majors)
    return reports


def test_the_set_has_at_least_400_distinct_sentences(blind_set):
    ids = [s.sentence_id for s in blind_set.sentences]

    assert len(ids) >= 400 and len(set(ids)) == len(ids)


def test_every_label_names_a_known_sentence_an_allowed_label_and_a_listed_finding(blind_set):
    ids = {s.sentence_id for s in blind_set.sentences}
    names = {f.cui: f.name for f in blind_set.findings}

    assert all(lab.sentence_id in ids for lab in blind_set.labels)
    assert all(lab.label in LABELS for lab in blind_set.labels)
    assert all(names.get(lab.cui) == lab.finding for lab in blind_set.labels)
    assert len({(lab.sentence_id, lab.cui) for lab in blind_set.labels}) == len(blind_set.labels)


def test_every_finding_cui_is_a_concept_of_the_bundled_subset_under_its_preferred_name(blind_set):
    mrconso = Path(BLIND_SET_DIR).parent / "umls_subset" / "MRCONSO.RRF"
    preferred = {}
    for line in mrconso.read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if fields[2] == "P":
            preferred[fields[0]] = fields[14]

    assert {f.cui: f.name for f in blind_set.findings}.items() <= preferred.items()


def test_every_sentence_occurs_in_its_report_section_and_the_normal_flag_matches_the_mesh_tags(
        blind_set, iu_reports):
    for s in blind_set.sentences:
        sections, majors = iu_reports[s.report]
        assert s.text in sections[s.section], s.sentence_id
        assert s.normal_report == (majors == ["normal"]), s.sentence_id


def test_the_set_reads_every_finding_and_has_normal_report_sentences(blind_set):
    counted = Counter(lab.cui for lab in blind_set.labels)

    assert {f.cui for f in blind_set.findings} == set(counted)
    assert sum(s.normal_report for s in blind_set.sentences) >= 50


def test_a_label_row_for_an_unknown_sentence_is_rejected_with_file_and_line(tmp_path):
    for name in ("sentences.tsv", "findings.tsv"):
        (tmp_path / name).write_text((BLIND_SET_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "labels.tsv").write_text("sentence_id\tcui\tfinding\tlabel\nnope-F0\tC0018800\tcardiomegaly\tpresent\n",
                                         encoding="utf-8")

    with pytest.raises(BlindSetError, match=r"labels.tsv:2: sentence_id 'nope-F0'"):
        load_blind_set(tmp_path)


def test_the_sampler_reproduces_sentences_tsv_byte_for_byte(tmp_path, monkeypatch):
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("blind_sample", BLIND_SET_DIR / "sample.py")
    sampler = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "blind_sample", sampler)  # dataclasses look their module up
    spec.loader.exec_module(sampler)

    sampler.main(["--out", str(tmp_path / "sentences.tsv")])

    assert (tmp_path / "sentences.tsv").read_bytes() == (BLIND_SET_DIR / "sentences.tsv").read_bytes()
