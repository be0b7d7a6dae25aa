"""PRIOR's downstream protocol (QtacierP/PRIOR @ 086bf2e), as far as its official code goes.

The repository ships one downstream evaluation: zero-shot classification on CheXpert 5×200,
from its own list ``datasets/zero_shot_classification/chexpert_5x200.json`` ({row id:
{image_path relative to CheXpert-v1.0-small, one-hot label over 5 tasks}}), iterated in
the file's key order (``ZeroShotClassificationDataset``, ``rate`` 1.0 = all). Prompts: one
per class, "<task> is observed"; the prediction is the argmax of softmax(global logits,
max over prompts) + 0.5 · softmax(mean local attention); scored with sklearn accuracy and
macro precision / recall / F1 and Cohen's kappa (``zero_classification_model.py``).

Supervised classification, segmentation and detection are, in its readme's words, "similar
to LoVT" and their code is not released: no split or fraction can be rebuilt from it, so
``--protocol prior`` refuses those tasks, naming why (docs/eval.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kgvlp.data.readers.common import LayoutError
from kgvlp.eval.protocols.manifest import SplitManifest, file_sha256

PROTOCOL = "prior"
TASKS_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
PROMPT = "{} is observed"
DATASETS = ("chexpert_5x200",)
NOT_RELEASED = ("supervised classification, segmentation and detection: PRIOR's readme says they follow "
                "LoVT and their code is not released (QtacierP/PRIOR @ 086bf2e), so their splits cannot be rebuilt")


@dataclass(frozen=True)
class ZeroShotSpec:
    prompts: str = PROMPT
    image_size: int = 224                   # configs/image_transformation.yaml resize [224, 224]
    metric: str = "accuracy; macro precision, recall, F1; Cohen's kappa (argmax over 5 classes)"
    scoring: str = "softmax(global cosine·scale, max over prompts) + 0.5·softmax(local attention)"


def chexpert_5x200(json_path, fractions=None, seeds=None) -> list[SplitManifest]:
    """``json_path``: PRIOR's chexpert_5x200.json (from its repository)."""
    path = Path(json_path)
    if path.is_dir():
        path = path / "chexpert_5x200.json"
    if not path.is_file():
        raise LayoutError(f"{path} not found: pass PRIOR's datasets/zero_shot_classification/chexpert_5x200.json")
    entries = json.loads(path.read_text())
    ids, bad = [], []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "image_path" not in entry or len(entry.get("label", [])) != 5:
            bad.append(key)
            continue
        ids.append(str(entry["image_path"]))
    if bad:
        raise LayoutError(f"{path}: entries {bad[:5]}{'…' if len(bad) > 5 else ''} lack image_path or a 5-way "
                          "one-hot label")
    return [SplitManifest(PROTOCOL, "chexpert_5x200", "zero_shot", {"test": ids}, class_names=list(TASKS_CLASSES),
                          sources={path.name: file_sha256(path)},
                          notes=["test only, in the JSON's key order; image_path relative to CheXpert-v1.0-small"])]


BUILDERS = {"chexpert_5x200": chexpert_5x200}
