"""What every reader returns, and the checks that make bad input fail clearly."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class LayoutError(FileNotFoundError):
    """A dataset folder does not match its published layout."""


class ReportError(ValueError):
    """A report file that cannot be parsed; the message names it."""


@dataclass
class Record:
    """One image (and its report, labels, annotations) as read from a source dataset.

    labels:    one value per ``ReadResult.label_names``: 1 positive, 0 negative,
               -1 uncertain, None not mentioned.
    instances: [{"finding", "box": [x0, y0, x1, y1] in source-image pixels or None,
                 "rle": SIIM run-length string or None, "polygon": [[x, y], ...] or None}]
    """
    id: str
    image_path: Path
    split: str
    findings: str = ""
    impression: str = ""
    report: str = ""
    labels: list | None = None
    instances: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class ReadResult:
    dataset: str
    records: list[Record]
    label_names: list[str]
    label_cuis: list[str | None] | None = None
    info: dict = field(default_factory=dict)
    # Bad records, never fatal: "file<TAB>reason" for each report that was skipped, and for
    # each kept with invalid UTF-8 bytes replaced by U+FFFD.
    skipped_reports: list[str] = field(default_factory=list)
    replaced_reports: list[str] = field(default_factory=list)


def read_report_text(path: Path, replaced: list[str]) -> str:
    """A report file as UTF-8; invalid bytes become U+FFFD and the file is listed in ``replaced``."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        replaced.append(f"{path}\tinvalid UTF-8 at byte {err.start} ({err.reason}); decoded with replacement")
        return data.decode("utf-8", errors="replace")


def require_file(path: Path, layout: str) -> Path:
    if not path.exists():
        raise LayoutError(f"{path} not found. Expected layout: {layout}")
    return path


def find_file(root: Path, names: list[str], layout: str) -> Path:
    """The first of ``names`` (relative to root) that exists, else a LayoutError."""
    for name in names:
        if (root / name).exists():
            return root / name
    raise LayoutError(f"none of {', '.join(str(root / n) for n in names)} found. Expected layout: {layout}")


def read_csv(path: Path, columns: list[str], layout: str, **kwargs):
    """pandas CSV with the columns checked; a missing one names the file and the layout."""
    import pandas as pd
    frame = pd.read_csv(path, **kwargs)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LayoutError(f"{path} lacks column(s) {missing} (has {list(frame.columns)}). Expected layout: {layout}")
    return frame


def hash_split(key: str, shares=(("train", 0.7), ("val", 0.15), ("test", 0.15))) -> str:
    """A stable split for datasets without an official one (by patient/study id)."""
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    acc = 0.0
    for name, share in shares:
        acc += share
        if u <= acc:
            return name
    return shares[-1][0]


def label_value(value) -> float | None:
    """CheXpert-style CSV cell → 1, 0, -1 or None (blank)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return float(value)


def index_images(root: Path, exts=(".jpg", ".jpeg", ".png", ".dcm")) -> dict[str, Path]:
    """Stem → path for every image under root (for datasets whose CSV gives only an id)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in exts:
                out.setdefault(stem, Path(dirpath) / f)
    return out


def rle_decode_siim(rle: str, width: int, height: int) -> np.ndarray:
    """SIIM-ACR run-length string (relative starts, column-major) → bool (height, width)."""
    mask = np.zeros(width * height, dtype=bool)
    values = [int(v) for v in rle.split()]
    position = 0
    for start, length in zip(values[0::2], values[1::2]):
        position += start
        mask[position:position + length] = True
        position += length
    return mask.reshape(width, height).T
