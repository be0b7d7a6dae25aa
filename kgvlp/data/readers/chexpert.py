"""CheXpert (Stanford AIMI; Stanford University School of Medicine CheXpert Dataset Research Use Agreement).

Layout: ``root/train.csv``, ``root/valid.csv`` (columns Path, Sex, Age, Frontal/Lateral,
AP/PA and the 14 labels) with Path relative to root's parent, e.g.
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``.
Labels: 1 positive, 0 negative, -1 uncertain, blank not mentioned.
"""
from __future__ import annotations

from pathlib import Path

from kgvlp.data.readers.common import ReadResult, Record, find_file, label_value, read_csv
from kgvlp.data.readers.mimic import CHEXPERT_LABELS

LAYOUT = "root/train.csv and root/valid.csv with columns Path, Frontal/Lateral, AP/PA and the 14 CheXpert labels"
# MGCA (after GLoRIA / the CheXpert paper): uncertain → 1 for these, → 0 for the rest.
U_ONES = ("Atelectasis", "Edema", "Pleural Effusion")
COMPETITION_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def uncertain_policy(label_names=CHEXPERT_LABELS) -> list[float]:
    """Per-label value for -1 (U-ones / U-zeros as MGCA), for build_downstream_dataset(uncertain=...)."""
    return [1.0 if name in U_ONES else 0.0 for name in label_names]


def _resolve(root: Path, relative: str) -> Path:
    path = Path(relative)
    for candidate in (root.parent / path, root / path, root / Path(*path.parts[1:])):
        if candidate.exists():
            return candidate
    return root.parent / path


def read_chexpert(root: str | Path, frontal_only: bool = True) -> ReadResult:
    root = Path(root)
    records = []
    for split, names in (("train", ["train.csv"]), ("val", ["valid.csv"])):
        frame = read_csv(find_file(root, names, LAYOUT), ["Path", "Frontal/Lateral", *CHEXPERT_LABELS], LAYOUT)
        if frontal_only:
            frame = frame[frame["Frontal/Lateral"] == "Frontal"]
        for row in frame.to_dict("records"):
            records.append(Record(id=row["Path"], image_path=_resolve(root, row["Path"]), split=split,
                                  labels=[label_value(row[n]) for n in CHEXPERT_LABELS],
                                  extra={"view": row.get("AP/PA")}))
    return ReadResult("chexpert", records, list(CHEXPERT_LABELS),
                      info={"uncertain_policy": uncertain_policy()})
