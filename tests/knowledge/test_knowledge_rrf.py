"""RRF reader: malformed rows are skipped, counted and reported with file and line."""
import string

from hypothesis import given, settings, strategies as st

from knowledge.rrf import ParseReport, read_rows

COLUMNS = ("CUI", "TUI", "STN", "STY", "ATUI", "CVF")
field = st.text(alphabet=string.ascii_letters + string.digits + " ,.-", max_size=8)
good_row = st.lists(field, min_size=6, max_size=6).map(lambda f: ("|".join(f) + "|").encode())
bad_row = st.one_of(
    st.lists(field, min_size=1, max_size=12).filter(lambda f: len(f) != 6).map(lambda f: ("|".join(f) + "|").encode()),
    st.lists(field, min_size=6, max_size=6).map(lambda f: "|".join(f).encode()).filter(lambda b: not b.endswith(b"|")),
    good_row.map(lambda b: b"\xff\xfe" + b),
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
    path.write_bytes(b"C1|T047|B|Disease|AT1||\nC2|T047|B|Disease|AT1|\nC3|T047\xff|B|D|AT1||\nC4|T047|B|D|AT1|X")
    report = ParseReport()

    rows = list(read_rows(path, COLUMNS, report))

    assert [r["CUI"] for r in rows] == ["C1"]
    reasons = {m.line: m.reason for m in report.examples}
    assert "expected 6 fields" in reasons[2]
    assert "UTF-8" in reasons[3]
    assert "trailing" in reasons[4]
