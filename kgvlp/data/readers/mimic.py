"""MIMIC-CXR-JPG 2.0/2.1 (PhysioNet, credentialed access, PhysioNet Credentialed Health Data License 1.5.0).

Layout (root = the mimic-cxr-jpg/2.x.x folder)::

    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, 14 CheXpert labels
    files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg
    reports: files/pXX/pXXXXXXXX/sXXXXXXXX.txt (from MIMIC-CXR's mimic-cxr-reports.zip,
             unpacked into root or given as ``reports_root``)
"""
from __future__ import annotations

import re
from pathlib import Path

from kgvlp.data.readers.common import (LayoutError, ReadResult, Record, find_file, label_value, read_csv,
                                       read_report_text)

LAYOUT = ("root/mimic-cxr-2.0.0-{metadata,split,chexpert}.csv[.gz], "
          "root/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg, reports root/files/pXX/pXXXXXXXX/sXXXXXXXX.txt")
CHEXPERT_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
                   "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
                   "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]
_HEADER = re.compile(r"^\s*([A-Z][A-Z /&()-]{2,}):", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """Upper-case "HEADER:" sections of a report (MIMIC/IU style) → {header: text}."""
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = text[m.end(): nxt.start() if nxt else len(text)]
        sections[m.group(1).strip()] = " ".join(body.split())
    return sections


def findings_impression(text: str) -> tuple[str, str]:
    sections = report_sections(text)
    findings = sections.get("FINDINGS", "")
    impression = sections.get("IMPRESSION", "") or sections.get("CONCLUSION", "")
    return findings, impression


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    return root / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


def read_mimic_cxr(root: str | Path, reports_root: str | Path | None = None, views=("PA", "AP"),
                   min_tokens: int = 3, merge_val_test: bool = True,
                   one_frontal_per_study: bool = False) -> ReadResult:
    """Records of MIMIC-CXR-JPG with MGCA's filters (PA/AP, ≥ ``min_tokens`` report words,
    validate+test merged into "val") and PRIOR's ``one_frontal_per_study`` option."""
    root = Path(root)
    reports_root = Path(reports_root) if reports_root else root
    meta = read_csv(find_file(root, ["mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"], LAYOUT),
                    ["dicom_id", "subject_id", "study_id", "ViewPosition"], LAYOUT)
    split = read_csv(find_file(root, ["mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-split.csv.gz"], LAYOUT),
                     ["dicom_id", "split"], LAYOUT)
    chexpert = read_csv(find_file(root, ["mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-chexpert.csv.gz"], LAYOUT),
                        ["subject_id", "study_id", *CHEXPERT_LABELS], LAYOUT)
    labels = {int(study): [label_value(v) for v in values] for study, values in
              zip(chexpert.study_id, chexpert[CHEXPERT_LABELS].itertuples(index=False, name=None))}
    split_of = dict(zip(split.dicom_id, split.split))
    frame = meta[meta.ViewPosition.isin(list(views))] if views else meta
    records, seen_studies, report_cache, replaced = [], set(), {}, []
    for row in frame.itertuples():
        study = int(row.study_id)
        if one_frontal_per_study and study in seen_studies:
            continue
        sdir = study_dir(root, int(row.subject_id), study)
        if study not in report_cache:
            report_path = study_dir(reports_root, int(row.subject_id), study).with_suffix(".txt")
            if not report_path.exists():
                raise LayoutError(f"report {report_path} not found. Expected layout: {LAYOUT}")
            text = read_report_text(report_path, replaced)
            report_cache[study] = (text, *findings_impression(text))
        text, findings, impression = report_cache[study]
        if len(re.findall(r"\w+", findings + " " + impression)) < min_tokens:
            continue
        s = {"validate": "val"}.get(split_of.get(row.dicom_id, "train"), split_of.get(row.dicom_id, "train"))
        if merge_val_test and s == "test":
            s = "val"
        seen_studies.add(study)
        records.append(Record(id=row.dicom_id, image_path=sdir / f"{row.dicom_id}.jpg", split=s,
                              findings=findings, impression=impression, report=text,
                              labels=labels.get(study), extra={"study_id": study, "view": row.ViewPosition}))
    return ReadResult("mimic_cxr", records, list(CHEXPERT_LABELS), replaced_reports=replaced)
