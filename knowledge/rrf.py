"""Streaming reader for UMLS Rich Release Format (RRF) files.

An RRF row is ``field|field|...|field|`` (one trailing bar). Column order comes from
MRFILES.RRF (``FMT`` column) when present, else from MRCOLS.RRF, else from the documented
UMLS defaults below. Rows are decoded one at a time as UTF-8; a row with the wrong field
count, invalid UTF-8, no trailing bar, or nothing but whitespace is skipped and recorded in a
:class:`ParseReport` (file, line number, reason) instead of raising. The report is logged once,
by whoever finishes reading (``ParseReport.log_summary``), not once per row.
"""
from __future__ import annotations

import dataclasses
import gzip
import logging
from collections import Counter
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "MRCONSO.RRF": ("CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI", "SCUI",
                    "SDUI", "SAB", "TTY", "CODE", "STR", "SRL", "SUPPRESS", "CVF"),
    "MRREL.RRF": ("CUI1", "AUI1", "STYPE1", "REL", "CUI2", "AUI2", "STYPE2", "RELA", "RUI",
                  "SRUI", "SAB", "SL", "RG", "DIR", "SUPPRESS", "CVF"),
    "MRSTY.RRF": ("CUI", "TUI", "STN", "STY", "ATUI", "CVF"),
    "MRDEF.RRF": ("CUI", "AUI", "ATUI", "SATUI", "SAB", "DEF", "SUPPRESS", "CVF"),
    "MRDOC.RRF": ("DOCKEY", "VALUE", "TYPE", "EXPL"),
    "MRFILES.RRF": ("FIL", "DES", "FMT", "CLS", "RWS", "BTS"),
    "MRCOLS.RRF": ("COL", "DES", "REF", "MIN", "AV", "MAX", "FIL", "DTY"),
}
MAX_EXAMPLES = 20  # per file


@dataclasses.dataclass
class Malformed:
    file: str
    line: int
    reason: str


@dataclasses.dataclass
class ParseReport:
    """Rows read and rows skipped per file; the first ``MAX_EXAMPLES`` skips of each file in full."""

    rows: Counter = dataclasses.field(default_factory=Counter)
    skipped: Counter = dataclasses.field(default_factory=Counter)
    examples: list[Malformed] = dataclasses.field(default_factory=list)

    def skip(self, file: str, line: int, reason: str) -> None:
        self.skipped[file] += 1
        if self.skipped[file] <= MAX_EXAMPLES:
            self.examples.append(Malformed(file, line, reason))

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        files = sorted(set(self.rows) | set(self.skipped))
        parts = [f"{f}: {self.rows[f]} rows, {self.skipped[f]} skipped" for f in files]
        parts += [f"  {m.file}:{m.line}: {m.reason}" for m in self.examples]
        return "\n".join(parts)

    def log_summary(self) -> None:
        """One WARNING with the per-file counts and first examples, if anything was skipped."""
        if self.total_skipped:
            log.warning("skipped %d malformed RRF rows:\n%s", self.total_skipped, self.summary())

    def to_dict(self) -> dict:
        return {"rows": dict(self.rows), "skipped": dict(self.skipped),
                "examples": [dataclasses.asdict(m) for m in self.examples]}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb", buffering=1 << 20)


def find_file(meta_dir: Path, name: str) -> Path | None:
    for candidate in (meta_dir / name, meta_dir / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def column_order(meta_dir: Path, name: str) -> tuple[str, ...]:
    """Columns of ``name`` from MRFILES, then MRCOLS, then the UMLS defaults."""
    mrfiles = find_file(meta_dir, "MRFILES.RRF")
    if mrfiles is not None and name != "MRFILES.RRF":
        for row in read_rows(mrfiles, DEFAULT_COLUMNS["MRFILES.RRF"], ParseReport()):
            if row["FIL"] == name and row["FMT"]:
                return tuple(row["FMT"].split(","))
    mrcols = find_file(meta_dir, "MRCOLS.RRF")
    if mrcols is not None and name not in ("MRCOLS.RRF", "MRFILES.RRF"):
        cols = [row["COL"] for row in read_rows(mrcols, DEFAULT_COLUMNS["MRCOLS.RRF"], ParseReport())
                if row["FIL"] == name]
        if cols:
            return tuple(cols)
    if name not in DEFAULT_COLUMNS:
        raise KeyError(f"no column order known for {name} in {meta_dir}")
    return DEFAULT_COLUMNS[name]


def split_row(raw: bytes, n_columns: int) -> list[str] | str:
    """Fields of one raw line, or the reason it is malformed."""
    raw = raw.rstrip(b"\r\n")
    if not raw.strip():
        return "blank line" if not raw else "whitespace-only line"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"invalid UTF-8 at byte {err.start}"
    if not text.endswith("|"):
        return "missing trailing '|'"
    fields = text[:-1].split("|")
    if len(fields) != n_columns:
        return f"expected {n_columns} fields, found {len(fields)}"
    return fields


def read_fields(path: Path, n_columns: int, report: ParseReport) -> Iterator[list[str]]:
    """Yield the fields of each well-formed row of ``path``; never holds more than one row."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    with _open(path) as f:
        for line_no, raw in enumerate(f, start=1):
            fields = split_row(raw, n_columns)
            if isinstance(fields, str):
                report.skip(name, line_no, fields)
                continue
            report.rows[name] += 1
            yield fields


def read_rows(path: Path, columns: tuple[str, ...], report: ParseReport) -> Iterator[dict[str, str]]:
    """Yield each well-formed row of ``path`` as a dict keyed by ``columns``."""
    for fields in read_fields(path, len(columns), report):
        yield dict(zip(columns, fields))


@dataclasses.dataclass
class MetaFile:
    """One release file opened for reading: its column order and its rows as field lists."""

    columns: tuple[str, ...]
    rows: Iterator[list[str]]

    def index(self, column: str) -> int:
        """Position of ``column`` in each row; -1 if this release's file lacks it."""
        return self.columns.index(column) if column in self.columns else -1


def open_meta(meta_dir: Path, name: str, report: ParseReport) -> MetaFile:
    """Release file ``name`` (e.g. ``"MRCONSO.RRF"``) in ``meta_dir``; no rows if it is absent."""
    meta_dir = Path(meta_dir)
    path = find_file(meta_dir, name)
    if path is None:
        log.info("%s not found in %s", name, meta_dir)
        return MetaFile(DEFAULT_COLUMNS.get(name, ()), iter(()))
    columns = column_order(meta_dir, name)
    return MetaFile(columns, read_fields(path, len(columns), report))


def read_meta(meta_dir: Path, name: str, report: ParseReport) -> Iterator[dict[str, str]]:
    """Rows of release file ``name`` in ``meta_dir`` as dicts; empty if absent."""
    meta = open_meta(meta_dir, name, report)
    return (dict(zip(meta.columns, fields)) for fields in meta.rows)
