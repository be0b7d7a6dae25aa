"""Read report corpora: IU X-ray (tgz or folder of XML), MIMIC-CXR (folder of .txt), CSV, JSONL.

Each reader yields ``(report_id, text)``. IU X-ray text is FINDINGS then IMPRESSION
(AbstractText elements); MIMIC text is the FINDINGS and IMPRESSION sections when present,
else the whole file; CSV/JSONL use the column ``report`` or ``text`` and ``id`` when present.

Bad records never stop a read: a malformed XML file or JSONL line, a row without text, is
skipped; text with invalid UTF-8 is decoded with replacement characters. Both are counted,
with the file (and line), in the ``CorpusReport`` passed as ``report=``.
"""
from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

IU_SECTIONS = ("FINDINGS", "IMPRESSION")
_MIMIC_SECTION = re.compile(r"^\s*(FINDINGS|IMPRESSION)\s*:\s*", re.M)
_ANY_SECTION = re.compile(r"^\s*[A-Z][A-Z /]+:\s*", re.M)


class ReportFormatError(ValueError):
    """A report file that cannot be read as its format (message names the file and what was expected)."""


@dataclass
class CorpusReport:
    """What a read skipped or repaired: ``(where, why)`` pairs, where = file[:line]."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    replaced_utf8: list[str] = field(default_factory=list)

    def summary(self, limit: int = 10) -> str:
        lines = [f"skipped {len(self.skipped)} unreadable reports"] if self.skipped else []
        lines += [f"  {where}: {why}" for where, why in self.skipped[:limit]]
        if self.replaced_utf8:
            lines.append(f"{len(self.replaced_utf8)} reports had invalid UTF-8 (decoded with replacement): "
                         + ", ".join(self.replaced_utf8[:limit]))
        return "\n".join(lines)


def _decode(data: bytes, where: str, report: CorpusReport | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if report is not None:
            report.replaced_utf8.append(where)
        return data.decode("utf-8", errors="replace")


def iu_xml_text(xml_bytes: bytes, name: str = "<bytes>") -> str:
    """FINDINGS + IMPRESSION of one IU report; ReportFormatError naming ``name`` if it is not XML."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise ReportFormatError(f"{name}: not a well-formed IU X-ray XML report ({e})") from None
    parts = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
    return " ".join(parts[s] for s in IU_SECTIONS if parts.get(s))


def _iu_reports(items, report: CorpusReport | None) -> Iterator[tuple[str, str]]:
    """(name, read bytes) pairs → (id, text), skipping what is not IU XML."""
    for name, read in items:
        try:
            yield Path(name).stem, iu_xml_text(read(), name)
        except ReportFormatError as e:
            if report is None:
                raise
            report.skipped.append((name, str(e).split(": ", 1)[1]))


def read_iu_tgz(path: Path, report: CorpusReport | None = None) -> Iterator[tuple[str, str]]:
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
        members.sort(key=lambda m: (len(m.name), m.name))
        yield from _iu_reports(((f"{path}:{m.name}", tar.extractfile(m).read) for m in members), report)


def mimic_text(raw: str) -> str:
    matches = list(_MIMIC_SECTION.finditer(raw))
    if not matches:
        return " ".join(raw.split())
    texts = []
    for m in matches:
        rest = raw[m.end():]
        nxt = _ANY_SECTION.search(rest)
        texts.append(" ".join((rest[:nxt.start()] if nxt else rest).split()))
    return " ".join(t for t in texts if t)


def _row_text(row: dict) -> str | None:
    for key in ("report", "text"):
        if key in row and row[key] is not None:
            return str(row[key])
    return None


def read_reports(path: str | Path, report: CorpusReport | None = None) -> Iterator[tuple[str, str]]:
    """Yield (id, text) from any supported corpus layout. With ``report``, unreadable records
    are skipped and counted there; without it, the first one raises ReportFormatError."""
    path = Path(path)
    name = path.name.lower()

    def bad(where: str, why: str) -> None:
        if report is None:
            raise ReportFormatError(f"{where}: {why}")
        report.skipped.append((where, why))

    if name.endswith((".tgz", ".tar.gz")):
        yield from read_iu_tgz(path, report)
    elif path.is_dir():
        xmls = sorted(path.rglob("*.xml"))
        if xmls:
            yield from _iu_reports(((str(p), p.read_bytes) for p in xmls), report)
        else:
            for p in sorted(path.rglob("*.txt")):
                yield p.stem, mimic_text(_decode(p.read_bytes(), str(p), report))
    elif name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(_decode(path.read_bytes(), str(path), report), newline=""))
        for i, row in enumerate(reader):
            body = _row_text(row)
            if body is None:
                bad(f"{path}:{reader.line_num}", "row has no 'report' or 'text' field")
                continue
            yield str(row.get("id") or row.get("study_id") or i), body
    elif name.endswith((".jsonl", ".json")):
        with open(path, "rb") as f:
            for i, raw in enumerate(f):
                where = f"{path}:{i + 1}"
                line = _decode(raw, where, report)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    bad(where, f"not a JSON object ({e.msg})")
                    continue
                body = _row_text(row) if isinstance(row, dict) else None
                if body is None:
                    bad(where, "expected a JSON object with a 'report' or 'text' field")
                    continue
                yield str(row.get("id", i)), body
    else:
        raise ReportFormatError(f"{path}: unsupported report corpus; expected an IU X-ray .tgz or folder of "
                                f"XML, a folder of MIMIC .txt, a .csv or a .jsonl")


def iu_reports_path() -> Path:
    """The IU X-ray reports shipped in the torchxrayvision package."""
    import importlib.util
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.origin:
        raise FileNotFoundError("torchxrayvision is not installed")
    return Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
