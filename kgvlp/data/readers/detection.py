"""Readers for the classification/detection/segmentation downstream sets.

RSNA Pneumonia Detection (Kaggle; RSNA's competition terms, non-commercial research):
    root/stage_2_train_labels.csv (patientId, x, y, width, height, Target) and
    root/stage_2_train_images/<patientId>.dcm (DICOM needs pydicom; a .png/.jpg of the same
    name is read too). Several rows per patient = several boxes.
COVIDx (github.com/lindawangg/COVID-Net; per-source licences, see its docs):
    root/train.txt, root/test.txt (optionally val.txt): "patient_id filename label source"
    per line, images in root/train/, root/test/ (root/val/).
SIIM-ACR Pneumothorax (Kaggle / SIIM; competition terms): root/train-rle.csv (ImageId,
    EncodedPixels; "-1" = no pneumothorax, relative column-major RLE on 1024×1024), images
    anywhere under root named <ImageId>.dcm/.png.
Object-CXR (JF Healthcare, MIDL 2020 challenge; CC BY-NC 4.0): root/train.csv and
    root/dev.csv (image_name, annotation: "type x y ...;" per object; 0 box, 1 ellipse box,
    2 polygon), images in root/train/ and root/dev/.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kgvlp.data.readers.common import (LayoutError, ReadResult, Record, find_file, hash_split, index_images,
                                       read_csv, require_file)

RSNA_LAYOUT = "root/stage_2_train_labels.csv (patientId,x,y,width,height,Target) + root/stage_2_train_images/<patientId>.dcm|png"
COVIDX_LAYOUT = "root/train.txt, root/test.txt ('patient_id filename label source' per line) + root/train/, root/test/"
SIIM_LAYOUT = "root/train-rle.csv (ImageId, EncodedPixels) + images <ImageId>.dcm|png anywhere under root"
OBJECT_LAYOUT = "root/train.csv, root/dev.csv (image_name, annotation) + root/train/*.jpg, root/dev/*.jpg"


def read_rsna_pneumonia(root: str | Path) -> ReadResult:
    root = Path(root)
    frame = read_csv(find_file(root, ["stage_2_train_labels.csv", "stage_2_train_labels.csv.zip"], RSNA_LAYOUT),
                     ["patientId", "x", "y", "width", "height", "Target"], RSNA_LAYOUT)
    folder = require_file(root / "stage_2_train_images", RSNA_LAYOUT)
    by_patient: dict[str, Record] = {}
    for row in frame.to_dict("records"):
        pid = row["patientId"]
        if pid not in by_patient:
            path = folder / f"{pid}.dcm"
            for ext in (".png", ".jpg"):
                if not path.exists() and (folder / f"{pid}{ext}").exists():
                    path = folder / f"{pid}{ext}"
            by_patient[pid] = Record(id=pid, image_path=path, split=hash_split(pid), labels=[0.0])
        if int(row["Target"]) == 1:
            rec = by_patient[pid]
            rec.labels = [1.0]
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
            rec.instances.append({"finding": "pneumonia", "box": [x, y, x + w, y + h]})
    return ReadResult("rsna_pneumonia", list(by_patient.values()), ["pneumonia"], ["C0032285"])


def read_covidx(root: str | Path) -> ReadResult:
    root = Path(root)
    rows = []
    for split, name in (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt")):
        path = root / name
        if not path.exists():
            if name == "val.txt":
                continue
            raise LayoutError(f"{path} not found. Expected layout: {COVIDX_LAYOUT}")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 3:
                raise LayoutError(f"{path}:{n}: expected 'patient_id filename label source', got {line!r}")
            rows.append((split, parts[1], parts[2]))
    classes = sorted({label for _, _, label in rows})
    records = [Record(id=f, image_path=root / split / f, split=split,
                      labels=[float(label == c) for c in classes]) for split, f, label in rows]
    return ReadResult("covidx", records, classes)


def read_siim_acr(root: str | Path) -> ReadResult:
    root = Path(root)
    frame = read_csv(find_file(root, ["train-rle.csv", "train-rle.csv.gz"], SIIM_LAYOUT),
                     ["ImageId", "EncodedPixels"], SIIM_LAYOUT, skipinitialspace=True)
    images = index_images(root)
    by_id: dict[str, Record] = {}
    for image_id, rle in zip(frame.ImageId, frame.EncodedPixels):
        if image_id not in images:
            raise LayoutError(f"image {image_id} listed in train-rle.csv not found under {root}. "
                              f"Expected layout: {SIIM_LAYOUT}")
        rec = by_id.setdefault(image_id, Record(id=image_id, image_path=images[image_id],
                                                split=hash_split(image_id), labels=[0.0]))
        rle = str(rle).strip()
        if rle != "-1":
            rec.labels = [1.0]
            rec.instances.append({"finding": "pneumothorax", "rle": rle})
    return ReadResult("siim_acr", list(by_id.values()), ["pneumothorax"], ["C2073565"])


def parse_object_annotation(text) -> list[dict]:
    """Object-CXR annotation string → instances with a box (and polygon for type 2)."""
    out = []
    if not isinstance(text, str) or not text.strip():
        return out
    for part in text.split(";"):
        values = part.split()
        if len(values) < 5:
            continue
        kind, coords = int(values[0]), np.array([float(v) for v in values[1:]]).reshape(-1, 2)
        box = [float(coords[:, 0].min()), float(coords[:, 1].min()),
               float(coords[:, 0].max()), float(coords[:, 1].max())]
        out.append({"finding": "foreign_object", "box": box, "shape": ["box", "ellipse", "polygon"][kind],
                    "polygon": coords.tolist() if kind == 2 else None})
    return out


def read_object_cxr(root: str | Path) -> ReadResult:
    root = Path(root)
    records = []
    for split, name, folder in (("train", "train.csv", "train"), ("val", "dev.csv", "dev")):
        frame = read_csv(require_file(root / name, OBJECT_LAYOUT), ["image_name", "annotation"], OBJECT_LAYOUT)
        for image_name, annotation in zip(frame.image_name, frame.annotation):
            instances = parse_object_annotation(annotation)
            records.append(Record(id=image_name, image_path=root / folder / image_name, split=split,
                                  labels=[float(bool(instances))], instances=instances))
    return ReadResult("object_cxr", records, ["foreign_object"])
