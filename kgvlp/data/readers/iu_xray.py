"""IU X-ray / OpenI (Indiana University; CC BY-NC-ND 4.0; openi.nlm.nih.gov).

Layout: ``root/ecgen-radiology/<n>.xml`` (or the reports archive ``NLMCXR_reports.tgz``,
also shipped inside torchxrayvision) and ``root/NLMCXR_png/<parentImage id>.png``.
Each XML holds AbstractText sections (COMPARISON, INDICATION, FINDINGS, IMPRESSION),
MeSH tags (``<major>``, ``<automatic>``) and the ids of its images (``<parentImage id>``).
"""
from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from kgvlp.data.readers.common import LayoutError, ReadResult, Record, ReportError, hash_split
from kgvlp.data.synth.findings import FINDINGS, LABEL_NAMES

LAYOUT = "root/ecgen-radiology/*.xml (or root/NLMCXR_reports.tgz) and root/NLMCXR_png/<image id>.png"
# MeSH major heading (first component) → SynthCXR label, so IU shares the label space.
MESH_TO_LABEL = {"Cardiomegaly": "cardiomegaly", "Pleural Effusion": "pleural_effusion",
                 "Pneumothorax": "pneumothorax", "Consolidation": "consolidation",
                 "Nodule": "nodule", "Mass": "mass", "Pulmonary Atelectasis": "atelectasis",
                 "Pulmonary Edema": "edema", "Catheters, Indwelling": "support_devices",
                 "Tube, Inserted": "support_devices", "Medical Device": "support_devices",
                 "Implanted Medical Device": "support_devices"}


@dataclass
class IUReport:
    id: str
    sections: dict[str, str]
    mesh_major: list[str]
    mesh_automatic: list[str]
    images: list[str] = field(default_factory=list)

    @property
    def findings(self) -> str:
        return self.sections.get("FINDINGS", "")

    @property
    def impression(self) -> str:
        return self.sections.get("IMPRESSION", "")


def parse_report(xml_bytes: bytes) -> IUReport:
    tree = ET.fromstring(xml_bytes)
    uid = tree.find("uId")
    sections = {a.get("Label"): " ".join((a.text or "").split()) for a in tree.iter("AbstractText")}
    mesh = tree.find("MeSH")
    major = [m.text.strip() for m in mesh.iter("major")] if mesh is not None else []
    automatic = [m.text.strip() for m in mesh.iter("automatic")] if mesh is not None else []
    return IUReport(id=uid.get("id") if uid is not None else "", sections=sections, mesh_major=major,
                    mesh_automatic=automatic, images=[p.get("id") for p in tree.iter("parentImage")])


def _parsed(name: str, data: bytes, skipped: list[str] | None) -> IUReport | None:
    """The report in ``data``; a malformed one raises ReportError naming ``name``, or with
    ``skipped`` is listed there ("name<TAB>reason") and gives None."""
    try:
        return parse_report(data)
    except (ET.ParseError, ValueError, AttributeError) as err:   # not XML, or not a report
        reason = f"{type(err).__name__}: {err}"
        if skipped is None:
            raise ReportError(f"{name}: not an IU X-ray report XML ({reason})") from None
        skipped.append(f"{name}\t{reason}")
        return None


def iter_reports(source: str | Path, skipped: list[str] | None = None):
    """IUReports from an ``ecgen-radiology`` folder, a folder holding it, or the tgz. A
    malformed XML file raises ReportError naming it, or with ``skipped`` (a list) is
    listed there and skipped."""
    source = Path(source)
    if source.is_file() and source.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(source) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".xml"):
                    report = _parsed(f"{source}:{member.name}", tar.extractfile(member).read(), skipped)
                    if report is not None:
                        yield report
        return
    folder = source / "ecgen-radiology" if (source / "ecgen-radiology").is_dir() else source
    if (source / "NLMCXR_reports.tgz").is_file() and not (source / "ecgen-radiology").is_dir():
        yield from iter_reports(source / "NLMCXR_reports.tgz", skipped)
        return
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise LayoutError(f"no report XML in {folder}. Expected layout: {LAYOUT}")
    for path in files:
        report = _parsed(str(path), path.read_bytes(), skipped)
        if report is not None:
            yield report


def mesh_labels(report: IUReport) -> list[float]:
    labels = [0.0] * len(LABEL_NAMES)
    for term in report.mesh_major:
        name = MESH_TO_LABEL.get(term.split("/")[0].strip())
        if name:
            labels[LABEL_NAMES.index(name)] = 1.0
    return labels


def read_iu_xray(root: str | Path, images: str = "NLMCXR_png", first_image_only: bool = False) -> ReadResult:
    """One record per image (or per report with ``first_image_only``); split by report id."""
    root = Path(root)
    records, skipped = [], []
    for report in iter_reports(root, skipped):
        text = "\n".join(f"{k}: {v}" for k, v in report.sections.items() if v)
        for image_id in report.images[:1] if first_image_only else report.images:
            records.append(Record(id=image_id, image_path=root / images / f"{image_id}.png",
                                  split=hash_split(report.id), findings=report.findings,
                                  impression=report.impression, report=text, labels=mesh_labels(report),
                                  extra={"report_id": report.id, "mesh_major": report.mesh_major,
                                         "mesh_automatic": report.mesh_automatic}))
    return ReadResult("iu_xray", records, list(LABEL_NAMES), [f.cui for f in FINDINGS], skipped_reports=skipped)
