"""Tiny datasets in the published layouts of the papers' downstream sets (CSV/TXT/JSON
exactly as the downloads name and shape them), for the protocol split tests.

The same generator feeds tools/official_splits.py (which runs the official MGCA / PRIOR
preprocessing on it) and tests/eval/test_protocols.py (which runs kgvlp's), so both see
byte-identical files. Python's ``random.Random(seed).random()`` only: its stream is fixed
across Python versions. Images are optional flat grey PNG/JPEGs (16 px; 1024 px where boxes or masks are in full-size pixels), enough for ``kgvlp data
prepare`` and an end-to-end ``kgvlp eval --protocol``.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

CHEXPERT_LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices"]   # the order of CheXpert's train.csv header
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
CHEXPERT_FOLDER = "CheXpert-v1.0-small"
# Sizes: CheXpert needs ≥ 200 single-finding frontal images per competition task (5×200 is
# drawn with n=200); the hold-out counts that the official code hardcodes for full-size
# data are passed smaller (docs/eval.md, "Fixtures").
CHEXPERT_SINGLE_PER_TASK, CHEXPERT_OTHER, CHEXPERT_VALID_ROWS, CHEXPERT_VALID_NUM = 205, 160, 30, 40
RSNA_PATIENTS, RSNA_DETECTION_HOLDOUT = 260, 30
COVIDX_TRAIN, COVIDX_TEST = 150, 30
SIIM_IMAGES = 300
OBJECT_TRAIN, OBJECT_DEV = 200, 30
PRIOR_PER_CLASS = 12


def _image(path: Path, value: int, size: int = 16) -> None:
    """A flat grey image; ``size`` 1024 where boxes / masks are given in full-size pixels."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), color=value % 256).save(path)


def _chexpert_cell(rng: random.Random):
    u = rng.random()
    return "" if u < 0.55 else "0.0" if u < 0.75 else "-1.0" if u < 0.85 else "1.0"


def write_chexpert(root: Path, images: bool, seed: int = 1) -> Path:
    rng = random.Random(seed)
    folder = root / CHEXPERT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]

    def rows(split: str, count: int, first_patient: int, single: bool):
        out = []
        for k in range(count):
            patient = first_patient + k // 2
            frontal = single or rng.random() < 0.7
            view = f"view{1 + k % 2}_{'frontal' if frontal else 'lateral'}.jpg"
            path = f"{CHEXPERT_FOLDER}/{split}/patient{patient:05d}/study{1 + k % 3}/{view}"
            if single:   # positive for one competition task only, blank or 0 elsewhere
                task = COMPETITION[k % 5]
                labels = {n: ("1.0" if n == task else ("" if rng.random() < 0.6 else "0.0")) for n in CHEXPERT_LABELS}
                labels["No Finding"] = "" if rng.random() < 0.5 else "1.0"
            else:
                labels = {n: _chexpert_cell(rng) for n in CHEXPERT_LABELS}
            out.append([path, "Female" if rng.random() < 0.5 else "Male", str(20 + int(rng.random() * 70)),
                        "Frontal" if frontal else "Lateral", ("AP" if rng.random() < 0.5 else "PA") if frontal else "",
                        *[labels[n] for n in CHEXPERT_LABELS]])
        return out
    single = rows("train", 5 * CHEXPERT_SINGLE_PER_TASK, 1, True)
    other = rows("train", CHEXPERT_OTHER, 1 + len(single), False)
    train = single + other
    rng.shuffle(train)
    valid = rows("valid", CHEXPERT_VALID_ROWS, 70000, False)
    for name, table in (("train.csv", train), ("valid.csv", valid)):
        with open(folder / name, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *table])
        if images:
            for n, row in enumerate(table):
                _image(root / row[0], n)
    return folder


def write_rsna(root: Path, images: bool, seed: int = 2) -> Path:
    rng = random.Random(seed)
    folder = root / "rsna"
    folder.mkdir(parents=True, exist_ok=True)
    table, detail = [], []
    for k in range(RSNA_PATIENTS):
        pid = "%08x-%04x-%04x-%04x-%012x" % tuple(int(rng.random() * 16 ** w) for w in (8, 4, 4, 4, 12))
        boxes = 0 if rng.random() < 0.7 else 1 + int(rng.random() * 3)
        if boxes == 0:
            table.append([pid, "", "", "", "", "0"])
        for _ in range(boxes):
            x, y = 100 + int(rng.random() * 500), 100 + int(rng.random() * 500)
            table.append([pid, f"{x}.0", f"{y}.0", f"{100 + int(rng.random() * 200)}.0",
                          f"{100 + int(rng.random() * 300)}.0", "1"])
        detail.append([pid, "Lung Opacity" if boxes else "Normal"])
        if images:
            _image(folder / "stage_2_train_images" / f"{pid}.png", k, size=1024)
    with open(folder / "stage_2_train_labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["patientId", "x", "y", "width", "height", "Target"], *table])
    with open(folder / "stage_2_detailed_class_info.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["patientId", "class"], *detail])
    return folder


def write_covidx(root: Path, images: bool, seed: int = 3) -> Path:
    rng = random.Random(seed)
    folder = root / "covidx"
    folder.mkdir(parents=True, exist_ok=True)
    sources = ["cohen", "rsna", "sirm", "ricord"]
    for split, count in (("train", COVIDX_TRAIN), ("test", COVIDX_TEST)):
        lines = []
        for k in range(count):
            label = ["normal", "pneumonia", "COVID-19"][int(rng.random() * 3)]
            name = f"{split}-{k:04d}-{int(rng.random() * 1e6):06d}.png"
            lines.append(f"{1000 + k} {name} {label} {sources[int(rng.random() * 4)]}")
            if images:
                _image(folder / split / name, k)
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def siim_rows(seed: int = 4) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for k in range(SIIM_IMAGES):
        image_id = f"1.2.276.0.7230010.3.1.4.8323329.{1000 + k}.1517875{int(rng.random() * 1e6):06d}"
        masks = 0 if rng.random() < 0.72 else 1 + int(rng.random() * 2)
        if masks == 0:
            rows.append((image_id, "-1"))
        for _ in range(masks):
            start = 1024 * (300 + int(rng.random() * 400)) + 300 + int(rng.random() * 400)
            rows.append((image_id, f"{start} 60" + " 964 60" * 59))   # a 60 × 60 px square
    return rows


def write_siim(root: Path, images: bool, seed: int = 4, dicom_stubs: bool = False) -> Path:
    """train-rle.csv as in the Kaggle stage-1 download: header 'ImageId, EncodedPixels'.
    ``dicom_stubs``: empty ``<ImageId>.dcm`` files in dicom-images-train/<study>/<series>/
    (the official preprocessing walks that tree for paths; it never opens the files)."""
    folder = root / "siim"
    folder.mkdir(parents=True, exist_ok=True)
    rows = siim_rows(seed)
    with open(folder / "train-rle.csv", "w") as handle:
        handle.write("ImageId, EncodedPixels\n" + "".join(f"{i},{r}\n" for i, r in rows))
    for n, image_id in enumerate(dict.fromkeys(i for i, _ in rows)):
        study = folder / "dicom-images-train" / f"1.2.276.0.7230010.3.1.2.{n}" / f"1.2.276.0.7230010.3.1.3.{n}"
        if dicom_stubs:
            study.mkdir(parents=True, exist_ok=True)
            (study / f"{image_id}.dcm").write_bytes(b"")
        if images:
            _image(study / f"{image_id}.png", n, size=1024)
    return folder


def write_object_cxr(root: Path, images: bool, seed: int = 5) -> Path:
    """train.csv / dev.csv (image_name, annotation); boxes (0) and ellipses (1) only — the
    official polygon (2) conversion needs shapely, which the split does not depend on."""
    rng = random.Random(seed)
    folder = root / "object_cxr"
    for split, count, first in (("train", OBJECT_TRAIN, 1), ("dev", OBJECT_DEV, 8001)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        table = []
        for k in range(count):
            name = f"{first + k:05d}.jpg"
            objects = []
            for _ in range(0 if rng.random() < 0.5 else 1 + int(rng.random() * 2)):
                x, y = 100 + int(rng.random() * 800), 100 + int(rng.random() * 800)
                objects.append(f"{int(rng.random() * 2)} {x} {y} {x + 40} {y + 60}")
            table.append([name, ";".join(objects)])
            if images:
                _image(folder / split / name, k, size=1024)
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["image_name", "annotation"], *table])
    return folder


def write_prior_5x200(root: Path, chexpert: Path, seed: int = 6) -> Path:
    """PRIOR's datasets/zero_shot_classification/chexpert_5x200.json shape: {row id: {image_path
    relative to the CheXpert folder, one-hot label over the 5 tasks}}, drawn from the fixture's
    own frontal single-finding train images (so their pixels are in its image cache)."""
    rng = random.Random(seed)
    with open(chexpert / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    entries = {}
    for c, task in enumerate(COMPETITION):
        single = [r for r in rows if r["Frontal/Lateral"] == "Frontal" and r[task] == "1.0"
                  and all(r[t] != "1.0" for t in COMPETITION if t != task)]
        for row in single[:PRIOR_PER_CLASS]:
            entries[str(int(rng.random() * 220000))] = {"image_path": row["Path"].split("/", 1)[1],
                                                        "label": [int(j == c) for j in range(5)]}
    path = root / "prior" / "chexpert_5x200.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=4))
    return path


def write_all(root: str | Path, images: bool = False, dicom_stubs: bool = False) -> dict[str, Path]:
    """Every fixture dataset under ``root``; returns {dataset: its folder (or file)}."""
    root = Path(root)
    chexpert = write_chexpert(root, images)
    return {"chexpert": chexpert, "rsna": write_rsna(root, images),
            "covidx": write_covidx(root, images), "siim": write_siim(root, images, dicom_stubs=dicom_stubs),
            "object_cxr": write_object_cxr(root, images), "prior_5x200": write_prior_5x200(root, chexpert)}
