"""RRF reader: malformed rows are skipped, counted and reported with file and line."""
import logging
import re
import string

from hypothesis import given, settings, strategies as st

import knowledge
from knowledge.rrf import ParseReport, read_rows
from umls_release_writer import MALFORMED_KINDS, write_release

COLUMNS = ("CUI", "TUI", "STN", "STY", "ATUI", "CVF")
field = st.text(alphabet=string.ascii_letters + string.digits + " ,.-", max_size=8)
good_row = st.lists(field, min_size=6, max_size=6).map(lambda f: ("|".join(f) + "|").encode())
bad_row = st.one_of(
    st.lists(field, min_size=1, max_size=12).filter(lambda f: len(f) != 6).map(lambda f: ("|".join(f) + "|").encode()),
    st.lists(field, min_size=6, max_size=6).map(lambda f: "|".join(f).encode()).filter(lambda b: not b.endswith(b"|")),
    good_row.map(lambda b: b"\xff\xfe" + b),
    st.sampled_from([b"", b" ", b"\t", b"  \t "]),  # blank and whitespace-only lines
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.data()), min_size=1, max_size=30))
def test_malformed_rows_are_skipped_counted_and_located(tmp_path_factory, rows):
    lines, bad_lines = [], []
    for is_bad, data in rows:
        lines.append(data.draw(bad_row if is_bad else good_row))
        if is_bad:
            bad_lines.append(len(lines))
    path = tmp_path_factory.mktemp("rrf") / "MRSTY.RRF"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = ParseReport()

    parsed = list(read_rows(path, COLUMNS, report))

    assert len(parsed) == len(lines) - len(bad_lines)
    assert report.skipped["MRSTY.RRF"] == len(bad_lines)
    assert [m.line for m in report.examples] == bad_lines[:len(report.examples)]
    assert all(m.file == "MRSTY.RRF" for m in report.examples)


def test_each_kind_of_malformed_row_names_its_reason(tmp_path):
    path = tmp_path / "MRSTY.RRF"
    path.write_bytes(b"C1|T047|B|Disease|AT1||\nC2|T047|B|Disease|AT1|\nC3|T047\xff|B|D|AT1||\n"
                     b"C4|T047|B|D|AT1|X\n\n   \nC5|T047|B|D|AT1|||\n")
    report = ParseReport()

    rows = list(read_rows(path, COLUMNS, report))

    assert [r["CUI"] for r in rows] == ["C1"]
    reasons = {m.line: m.reason for m in report.examples}
    assert "expected 6 fields" in reasons[2]
    assert "UTF-8" in reasons[3]
    assert "trailing" in reasons[4]
    assert reasons[5] == "blank line"
    assert reasons[6] == "whitespace-only line"
    assert "expected 6 fields, found 7" in reasons[7]


def test_malformed_lines_of_every_kind_are_counted_per_file_with_their_line(tmp_path):
    release = write_release(tmp_path, with_mrdoc=True, malformed_per_kind=4)
    report = ParseReport()

    knowledge.build_graph(release.meta_dir, report=report)

    assert sum(len(lines) for lines in release.malformed_lines.values()) == 5 * 4 * len(MALFORMED_KINDS)
    assert dict(report.skipped) == {name: len(lines) for name, lines in release.malformed_lines.items()}
    for name, lines in release.malformed_lines.items():
        assert [m.line for m in report.examples if m.file == name] == lines[:20]


def test_the_malformed_summary_is_logged_once(tmp_path, caplog):
    release = write_release(tmp_path, with_mrdoc=True, malformed_per_kind=1)

    with caplog.at_level(logging.WARNING, logger="knowledge"):
        knowledge.build_graph(release.meta_dir)

    summaries = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(summaries) == 1
    for name in release.malformed_lines:
        assert re.search(rf"{name}: \d+ rows, {len(MALFORMED_KINDS)} skipped", summaries[0])
