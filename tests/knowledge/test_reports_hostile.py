"""Bad report records are skipped and counted by name; huge and binary texts are linked."""
import json

import pytest

from knowledge import cli
from knowledge.linking import CHUNK_CHARS
from knowledge.reports import CorpusReport, ReportFormatError, read_reports

GOOD_XML = (b'<eCitation><Abstract><AbstractText Label="FINDINGS">No pneumothorax.</AbstractText>'
            b'<AbstractText Label="IMPRESSION">Normal chest.</AbstractText></Abstract></eCitation>')


def test_malformed_xml_is_skipped_and_named(tmp_path):
    (tmp_path / "1.xml").write_bytes(GOOD_XML)
    (tmp_path / "2.xml").write_bytes(b"<eCitation><AbstractText Label=")
    corpus = CorpusReport()

    reports = list(read_reports(tmp_path, report=corpus))

    assert reports == [("1", "No pneumothorax. Normal chest.")]
    assert [where for where, _ in corpus.skipped] == [str(tmp_path / "2.xml")]


def test_without_a_report_the_first_bad_file_raises_naming_it(tmp_path):
    (tmp_path / "2.xml").write_bytes(b"\x00\xff not xml")

    with pytest.raises(ReportFormatError, match="2.xml"):
        list(read_reports(tmp_path))


def test_invalid_utf8_and_bad_jsonl_lines_are_counted(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a", "text": "No effusion."}\n{broken\n{"id": "b", "text": "caf\xe9 effusion."}\n[1]\n')
    corpus = CorpusReport()

    reports = list(read_reports(path, report=corpus))

    assert reports == [("a", "No effusion."), ("b", "caf\ufffd effusion.")]
    assert [where for where, _ in corpus.skipped] == [f"{path}:2", f"{path}:4"]
    assert corpus.replaced_utf8 == [f"{path}:3"]


def test_report_over_spacys_limit_is_linked_in_pieces(linker):
    text = "No pneumothorax. Small left pleural effusion. " * 25_000   # 1.15 MB: over spaCy's 1 MB max

    mentions = linker.link(text)

    assert len(text) > 2 * CHUNK_CHARS and len(mentions) == 50_000
    last = mentions[-1]
    assert text[last.start:last.end] == "pleural effusion" and last.sentence_index == 49_999
    assert mentions[-2].negated and not last.negated


def test_binary_text_links_without_error(linker):
    garbage = bytes(range(256)).decode("latin-1") * 100 + " No pneumothorax."

    assert [m.negated for m in linker.link(garbage)] == [True]


def test_link_command_prints_skipped_and_chunked_reports(tmp_path, bundled_graph, capsys):
    import knowledge
    graph = tmp_path / "g.jsonl.gz"
    knowledge.save_graph(bundled_graph, graph)
    corpus = tmp_path / "reports.jsonl"
    corpus.write_text(json.dumps({"id": "huge", "text": "No pneumothorax. " * 2000}) + "\nnot json\n")

    cli.main(["link", "--graph", str(graph), "--reports", str(corpus), "--out", str(tmp_path / "l.jsonl")])

    out, err = capsys.readouterr()
    assert "1 reports longer than 20,000 characters linked in pieces: huge" in out
    assert f"skipped 1 unreadable reports\n  {corpus}:2: not a JSON object" in err


def test_a_corrupt_link_cache_row_is_relinked_and_a_non_database_is_named(linker, tmp_path):
    import sqlite3

    from knowledge.batch import LinkCache, LinkCacheError, cache_key
    LinkCache(tmp_path)  # creates the table
    db = sqlite3.connect(tmp_path / "links.sqlite")
    db.execute("INSERT INTO links VALUES (?, ?)", (cache_key("No pneumothorax.", linker.fingerprint), '[{"x": 1}]'))
    db.commit()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "links.sqlite").write_bytes(b"not a database at all" * 10)

    [mentions] = linker.link_many(["No pneumothorax."], cache_dir=tmp_path, progress=False)

    assert [m.negated for m in mentions] == [True]
    with pytest.raises(LinkCacheError, match="other/links.sqlite"):
        LinkCache(tmp_path / "other")


def test_kgvlp_cli_names_an_unreadable_corpus_in_one_line(tmp_path, bundled_graph, capsys):
    import knowledge
    from kgvlp import cli as kgvlp_cli
    graph = tmp_path / "g.jsonl.gz"
    knowledge.save_graph(bundled_graph, graph)
    corpus = tmp_path / "reports.bin"
    corpus.write_bytes(b"\x00\x01")

    code = kgvlp_cli.main(["knowledge", "link", "--graph", str(graph), "--reports", str(corpus),
                           "--out", str(tmp_path / "l.jsonl")])

    err = capsys.readouterr().err
    assert code == 2 and f"{corpus}: unsupported report corpus" in err and "Traceback" not in err
