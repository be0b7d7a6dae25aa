"""MGCA's downstream protocol (HKU-MedAI/MGCA @ 680fe4a), rebuilt from the datasets' own files.

Which images are train/val/test and how label fractions are drawn follow the official
preprocessing (``mgca/preprocess/*.py``) and dataset classes (``mgca/datasets/*.py``);
the heads, optimisers and epochs follow the fine-tuning scripts (``mgca/models/mgca/*``,
``mgca/models/ssl_*.py``). The same pandas / scikit-learn / numpy calls with the same
seeds draw the same rows, so the ID lists equal the official ones exactly
(tests/eval/test_protocols.py checks this against lists the official code produced on
fixtures, tools/official_splits.py). Official quirks are kept and documented (docs/eval.md):
CheXpert's train/valid overlap, RSNA's two different splits (classification vs
detection/segmentation), the detection/segmentation subsets being the *second* draw of
numpy's global generator, SIIM's row-level split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgvlp.data.readers.common import LayoutError, find_file, read_csv
from kgvlp.data.readers.mimic import CHEXPERT_LABELS
from kgvlp.eval.protocols.manifest import SplitManifest, Subset, file_sha256

PROTOCOL = "mgca"
FRACTIONS = (0.01, 0.1, 1.0)
SEEDS = (42,)                      # every official fine-tuning script's default --seed
COMPETITION_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
U_ONES = ("Atelectasis", "Edema", "Pleural Effusion")   # constants.py CHEXPERT_UNCERTAIN_MAPPINGS
CHEXPERT_VALID_NUM = 5000          # constants.py: valid split carved out of train.csv
RSNA_CLS_HOLDOUT = 0.15            # preprocess/rsna.py preprocess_rsna_data: 70/15/15 of patients
RSNA_DET_HOLDOUT = 5337            # preprocess/rsna.py prepare_detection_data: 5,337 val + 5,337 test
SIIM_HOLDOUT = 0.15                # preprocess/siim.py: 70/15/15 of train-rle.csv *rows*
SUBSET_SEED = 42                   # datasets/classification_dataset.py: df.sample(frac, random_state=42)
TRAINER_BUILDS_TRAIN_SET = 2       # ssl_*.num_training_steps builds the train set, then trainer.fit again


@dataclass(frozen=True)
class TaskSpec:
    """How the official code trains and scores one downstream task (file:line refs in docs/eval.md)."""
    dataset: str
    task: str
    head: str
    metric: str
    optimizer: str = "AdamW(betas=(0.9, 0.999))"
    lr: dict = field(default_factory=lambda: {0.01: 5e-4, 0.1: 5e-4, 1.0: 5e-4})
    weight_decay: float = 1e-6
    batch_size: dict = field(default_factory=lambda: {0.01: 48, 0.1: 48, 1.0: 48})
    max_epochs: int = 50
    early_stopping: str = "val_loss, patience 10, min mode; test with the best checkpoint"
    frozen_encoder: bool = True
    image_size: int = 224


_LINEAR = "one Linear on the frozen global feature (SSLEvaluator, no hidden layer, dropout 0)"
_YOLO = "YOLOv3 head on frozen ResNet-50 C3–C5 (ssl_detector.ModelMain), NMS 0.5, conf 0.5"
TASKS = {
    ("chexpert", "classification"): TaskSpec("chexpert", "classification", _LINEAR, "macro AUROC over the 5 competition tasks"),
    ("rsna", "classification"): TaskSpec("rsna", "classification", _LINEAR, "AUROC (1 sigmoid output)"),
    ("covidx", "classification"): TaskSpec("covidx", "classification", _LINEAR, "accuracy (3-class softmax)"),
    ("rsna", "detection"): TaskSpec(
        "rsna", "detection", _YOLO, "mAP over IoU 0.4:0.05:0.75 (torchmetrics MeanAveragePrecision)",
        lr={0.01: 2e-4, 0.1: 5e-4, 1.0: 5e-4}, batch_size={0.01: 8, 0.1: 16, 1.0: 16},
        early_stopping="val_mAP, patience 10, max mode; test with the best checkpoint"),
    ("object_cxr", "detection"): TaskSpec(
        "object_cxr", "detection", _YOLO, "mAP over IoU 0.4:0.05:0.75 (torchmetrics MeanAveragePrecision)",
        lr={0.01: 2.5e-4, 0.1: 5e-4, 1.0: 5e-4}, batch_size={0.01: 8, 0.1: 16, 1.0: 16},
        early_stopping="val_mAP, patience 10, max mode; test with the best checkpoint"),
    ("siim", "segmentation"): TaskSpec(
        "siim", "segmentation", "U-Net (smp) on frozen ResNet-50 / SETR-PUP on frozen ViT-B/16",
        "Dice at 0.5 per image (empty truth: 1 if nothing predicted), mean over batches",
        weight_decay=0.05, batch_size={0.01: 8, 0.1: 8, 1.0: 8}),
    ("rsna", "segmentation"): TaskSpec(
        "rsna", "segmentation", "U-Net (smp) on frozen ResNet-50 / SETR-PUP on frozen ViT-B/16; boxes filled as masks",
        "Dice at 0.5 per image (empty truth: 1 if nothing predicted), mean over batches",
        weight_decay=0.05, batch_size={0.01: 16, 0.1: 16, 1.0: 16}),
}
DATASETS = ("chexpert", "rsna", "covidx", "siim", "object_cxr")


def _split_three(frame, holdout, seed: int = 0):
    """train | (test, val): MGCA splits off 2·holdout, then halves it — test first, val second."""
    from sklearn.model_selection import train_test_split
    rest_size = holdout * 2
    train, rest = train_test_split(frame, test_size=rest_size, random_state=seed)
    test, val = train_test_split(rest, test_size=0.5, random_state=seed)
    return train, val, test


def _classification_subsets(train_ids: list[str], fractions) -> list[Subset]:
    """pandas ``sample(frac, random_state=42)`` of the train split, the same for every seed."""
    import pandas as pd
    ids = pd.Series(train_ids)
    return [Subset(f, None, list(ids) if f == 1 else list(ids.sample(frac=f, random_state=SUBSET_SEED)))
            for f in fractions]


def _trainer_subsets(fractions, seeds, draw) -> list[Subset]:
    """Detection/segmentation: ``seed_everything(seed)`` seeds numpy's global generator and the
    train set is built twice (the step count, then fit); each build draws again, so the set
    trained on is the second draw."""
    out = []
    for fraction in fractions:
        for seed in seeds:
            rng = np.random.RandomState(seed)
            for _ in range(TRAINER_BUILDS_TRAIN_SET):
                ids = draw(rng, fraction)
            out.append(Subset(fraction, int(seed), [str(i) for i in ids]))
    return out


def _index_draw(train_ids: list[str]):
    """RSNA/Object-CXR detection, RSNA segmentation: ``choice(n, int(pct·n), replace=False)``."""
    array = np.asarray(train_ids, dtype=object)

    def draw(rng, fraction):
        n = len(array)
        return array[rng.choice(n, int(fraction * n), replace=False)]
    return draw


# --------------------------------------------------------------------------- CheXpert

def chexpert_5x200(frame):
    """CheXpert 5×200 (preprocess/chexpert.py): frontal train images positive for exactly one
    competition task and negative (blank = 0) for every other label but No Finding; 200 per
    task, pandas ``sample(n=200, random_state=0)``."""
    frontal = frame.fillna(0)
    frontal = frontal[frontal["Frontal/Lateral"] == "Frontal"]
    others = [n for n in CHEXPERT_LABELS if n != "No Finding"]
    picked = []
    for task in COMPETITION_TASKS:
        keep = frontal[task] == 1
        for name in others:
            if name != task:
                keep &= frontal[name] == 0
        candidates = frontal[keep]
        if len(candidates) < 200:
            raise LayoutError(f"CheXpert train.csv has {len(candidates)} frontal images positive for only "
                              f"{task!r}; MGCA's 5×200 set needs 200")
        picked.append(candidates.sample(n=200, random_state=0))
    import pandas as pd
    return pd.concat(picked)


def chexpert(root, fractions=FRACTIONS, seeds=SEEDS, valid_num: int = CHEXPERT_VALID_NUM) -> list[SplitManifest]:
    root = Path(root)
    layout = "root/train.csv and root/valid.csv (CheXpert-v1.0 or -small: Path, Frontal/Lateral, 14 labels)"
    columns = ["Path", "Frontal/Lateral", *CHEXPERT_LABELS]
    train_csv, test_csv = find_file(root, ["train.csv"], layout), find_file(root, ["valid.csv"], layout)
    full = read_csv(train_csv, columns, layout)
    held_out = set(chexpert_5x200(full)["Path"])
    pool = full[~full["Path"].isin(held_out)]
    if valid_num > len(pool):
        raise LayoutError(f"{train_csv}: {len(pool)} images outside 5×200, fewer than the {valid_num} "
                          f"MGCA carves out for validation")
    positions = np.random.RandomState(0).choice(len(pool), size=valid_num, replace=False)
    val = pool.iloc[positions]
    # Official quirk: the positions are dropped as index *labels* (df.drop(ids, errors="ignore")),
    # so train keeps most validation images and loses others at random.
    train = pool[~pool.index.isin(positions)]
    frontal = lambda f: f[f["Frontal/Lateral"] == "Frontal"]["Path"].tolist()  # noqa: E731
    test = read_csv(test_csv, columns, layout)
    splits = {"train": frontal(train), "val": frontal(val), "test": frontal(test)}
    overlap = len(set(splits["train"]) & set(splits["val"]))
    return [SplitManifest(
        PROTOCOL, "chexpert", "classification", splits, _classification_subsets(splits["train"], fractions),
        class_names=list(COMPETITION_TASKS),
        sources={"train.csv": file_sha256(train_csv), "valid.csv": file_sha256(test_csv)},
        notes=[f"valid = {valid_num} random rows of train.csv outside 5×200 (all views), frontal kept",
               f"official quirk kept: {overlap} frontal images are in both train and val",
               "test = valid.csv (frontal); uncertain: U-ones for " + ", ".join(U_ONES) + ", U-zeros otherwise"])]


# --------------------------------------------------------------------------- RSNA

def _rsna_patients(root: Path):
    layout = "root/stage_2_train_labels.csv (patientId, x, y, width, height, Target)"
    path = find_file(root, ["stage_2_train_labels.csv"], layout)
    rows = read_csv(path, ["patientId", "Target"], layout)
    # one row per patient, sorted by patientId (pandas groupby), positive if any row is
    target = rows.groupby("patientId")["Target"].max().reset_index()
    return target, {"stage_2_train_labels.csv": file_sha256(path)}


def rsna(root, fractions=FRACTIONS, seeds=SEEDS, detection_holdout: int = RSNA_DET_HOLDOUT) -> list[SplitManifest]:
    patients, sources = _rsna_patients(Path(root))
    ids = lambda f: f["patientId"].astype(str).tolist()  # noqa: E731
    train, val, test = _split_three(patients, RSNA_CLS_HOLDOUT)
    cls_splits = {"train": ids(train), "val": ids(val), "test": ids(test)}
    out = [SplitManifest(PROTOCOL, "rsna", "classification", cls_splits,
                         _classification_subsets(cls_splits["train"], fractions), class_names=["pneumonia"],
                         sources=sources, notes=["70/15/15 of patients (preprocess_rsna_data)"])]
    train, val, test = _split_three(patients, detection_holdout)
    dense = {"train": ids(train), "val": ids(val), "test": ids(test)}
    for task in ("detection", "segmentation"):
        out.append(SplitManifest(
            PROTOCOL, "rsna", task, dense, _trainer_subsets(fractions, seeds, _index_draw(dense["train"])),
            class_names=["pneumonia"], sources=sources,
            notes=[f"{detection_holdout} val + {detection_holdout} test patients (prepare_detection_data), "
                   "patients without boxes included; a split different from classification's"]))
    return out


# --------------------------------------------------------------------------- COVIDx

COVIDX_NAMES = (("train_COVIDx9A.txt", "test_COVIDx9A.txt"), ("train.txt", "test.txt"))


def covidx_class(name: str) -> int:
    """preprocess/covidx.py set_label: normal 0, pneumonia 1, anything else (COVID-19) 2."""
    return 0 if name == "normal" else 1 if name == "pneumonia" else 2


def _covidx_list(path: Path):
    import pandas as pd
    frame = pd.read_csv(path, sep=" ", header=None)
    if frame.shape[1] != 4:
        raise LayoutError(f"{path}: {frame.shape[1]} space-separated columns; MGCA expects 4 "
                          "('patient id' filename class 'data source')")
    frame.columns = ["patient id", "filename", "class", "data source"]
    return frame


def covidx(root, fractions=FRACTIONS, seeds=SEEDS) -> list[SplitManifest]:
    from sklearn.model_selection import train_test_split
    root = Path(root)
    names = next((pair for pair in COVIDX_NAMES if (root / pair[0]).exists() and (root / pair[1]).exists()), None)
    if names is None:
        raise LayoutError(f"{root}: none of {[' + '.join(p) for p in COVIDX_NAMES]} found "
                          "(COVIDx split lists, 'patient_id filename class source' per line)")
    full, test = _covidx_list(root / names[0]), _covidx_list(root / names[1])
    train, val = train_test_split(full, train_size=0.8, random_state=0)
    splits = {k: v["filename"].astype(str).tolist() for k, v in (("train", train), ("val", val), ("test", test))}
    classes = sorted(set(full["class"]) | set(test["class"]), key=lambda c: (covidx_class(c), c))
    return [SplitManifest(PROTOCOL, "covidx", "classification", splits,
                          _classification_subsets(splits["train"], fractions),
                          class_names=["normal", "pneumonia", "COVID-19"],
                          sources={n: file_sha256(root / n) for n in names},
                          notes=[f"classes found: {classes} (set_label maps all but normal/pneumonia to 2)",
                                 f"val = 20% of {names[0]} (train_test_split random_state 0); test = {names[1]}"])]


# --------------------------------------------------------------------------- SIIM

def siim(root, fractions=FRACTIONS, seeds=SEEDS) -> list[SplitManifest]:
    import pandas as pd
    root = Path(root)
    layout = "root/train-rle.csv (ImageId, EncodedPixels)"
    path = find_file(root, ["train-rle.csv"], layout)
    rows = read_csv(path, ["ImageId", "EncodedPixels"], layout)
    rows["positive"] = rows["EncodedPixels"].astype(str).str.strip() != "-1"
    train, val, test = _split_three(rows, SIIM_HOLDOUT)
    unique = lambda f: list(pd.unique(f["ImageId"].astype(str)))  # noqa: E731
    positives, negatives = train[train["positive"]], train[~train["positive"]]
    n_pos, neg_ids = positives["ImageId"].nunique(), pd.unique(negatives["ImageId"])

    def draw(rng, fraction):
        """SIIMImageDataset: as many negative images as positive ones, then the fraction of images."""
        chosen = rng.choice(neg_ids, size=n_pos, replace=False)
        frame = pd.concat([positives, negatives[negatives["ImageId"].isin(chosen)]])
        if fraction != 1:
            images = frame["ImageId"].unique()
            frame = frame[frame["ImageId"].isin(rng.choice(images, size=int(len(images) * fraction), replace=False))]
        return unique(frame)
    splits = {"train": unique(train), "val": unique(val), "test": unique(test)}
    return [SplitManifest(PROTOCOL, "siim", "segmentation", splits, _trainer_subsets(fractions, seeds, draw),
                          class_names=["pneumothorax"], sources={"train-rle.csv": file_sha256(path)},
                          notes=["70/15/15 of train-rle.csv rows (an image with several masks can sit in two "
                                 "splits); train keeps all positives and as many random negatives"])]


# --------------------------------------------------------------------------- Object-CXR

def object_cxr(root, fractions=FRACTIONS, seeds=SEEDS) -> list[SplitManifest]:
    from sklearn.model_selection import train_test_split
    root = Path(root)
    layout = "root/train.csv and root/dev.csv (image_name, annotation)"
    train_csv, dev_csv = find_file(root, ["train.csv"], layout), find_file(root, ["dev.csv"], layout)
    full, test = read_csv(train_csv, ["image_name"], layout), read_csv(dev_csv, ["image_name"], layout)
    train, val = train_test_split(full, test_size=0.1, random_state=0)
    splits = {k: v["image_name"].astype(str).tolist() for k, v in (("train", train), ("val", val), ("test", test))}
    return [SplitManifest(PROTOCOL, "object_cxr", "detection", splits,
                          _trainer_subsets(fractions, seeds, _index_draw(splits["train"])),
                          class_names=["foreign_object"],
                          sources={"train.csv": file_sha256(train_csv), "dev.csv": file_sha256(dev_csv)},
                          notes=["val = 10% of train.csv (random_state 0), test = dev.csv; images without "
                                 "objects included"])]


BUILDERS = {"chexpert": chexpert, "rsna": rsna, "covidx": covidx, "siim": siim, "object_cxr": object_cxr}
