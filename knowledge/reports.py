"""Read report corpora: IU X-ray (tgz or folder of XML), MIMIC-CXR (folder of .txt), CSV, JSONL.

Each reader yields ``(report_id, text)``. IU X-ray text is FINDINGS then IMPRESSION
(AbstractText elements); MIMIC text is the FINDINGS and IMPRESSION sections when present,
else the whole file; CSV/JSONL use the column ``report`` or ``text`` and ``id`` when present.
"""
from __future__ import annotations

import csv
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

IU_SECTIONS = ("FINDINGS", "IMPRESSION")
_MIMIC_SECTION = re.compile(r"^\s*(FINDINGS|IMPRESSION)\s*:\s*", re.M)
_ANY_SECTION = re.compile(r"^\s*[A-Z][A-Z /]+:\s*", re.M)


def iu_xml_text(xml_bytes: bytes) -> str:
    root = ET.fromstring(xml_bytes)
    parts = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
    return " ".join(parts[s] for s in IU_SECTIONS if parts.get(s))


def read_iu_tgz(path: Path) -> Iterator[tuple[str, str]]:
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
        members.sort(key=lambda m: (len(m.name), m.name))
        for member in members:
            yield Path(member.name).stem, iu_xml_text(tar.extractfile(member).read())


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


def _row_text(row: dict) -> str:
    for key in ("report", "text"):
        if key in row and row[key] is not None:
            return str(row[key])
    raise KeyError(f"row has no 'report' or 'text' field: {sorted(row)}")


def read_reports(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield (id, text) from any supported corpus layout."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".tgz", ".tar.gz")):
        yield from read_iu_tgz(path)
    elif path.is_dir():
        xmls = sorted(path.rglob("*.xml"))
        if xmls:
            for p in xmls:
                yield p.stem, iu_xml_text(p.read_bytes())
        else:
            for p in sorted(path.rglob("*.txt")):
                yield p.stem, mimic_text(p.read_text(encoding="utf-8", errors="replace"))
    elif name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f)):
                yield str(row.get("id") or row.get("study_id") or i), _row_text(row)
    elif name.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    row = json.loads(line)
                    yield str(row.get("id", i)), _row_text(row)
    else:
        raise ValueError(f"unsupported report corpus: {path}")


def iu_reports_path() -> Path:
    """The IU X-ray reports shipped in the torchxrayvision package."""
    import importlib.util
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.origin:
        raise FileNotFoundError("torchxrayvision is not installed")
    return Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
