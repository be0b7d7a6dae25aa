"""What an evaluation reads from a downstream dataset, and how it gets there.

A downstream dataset is any ``torch.utils.data.Dataset`` with ``label_names`` whose items
carry (as attributes or dict keys):

    image      (C, S, S) float, normalised like pretraining
    labels     (K,) float multi-hot (multi-label) or one-hot (multi-class)
    sentences  the report as cleaned sentences (or ``report``: raw text)      [optional]
    masks      (N, S, S) bool, one per drawn finding instance                  [optional]
    boxes      (N, 4) float xyxy pixels, one per instance                      [optional]
    instance_labels (N,) long, class index of each instance                    [optional]
    mentions   [{finding, instances, negated, words}] — which words of the
               report name which instances (SynthCXR)                          [optional]

``label_kind`` on the dataset says ``multilabel`` (default) or ``multiclass``. The tasks
ask ``capabilities(dataset)`` what is there and skip what cannot run, saying why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from kgvlp.data.text import split_sentences

SPLITS = ("train", "val", "test")


class EvalDataError(ValueError):
    """A downstream dataset could not be built or lacks what a task needs."""


@dataclass
class EvalSample:
    image: Tensor
    labels: Tensor
    sentences: list[str] | None = None
    masks: Tensor | None = None
    boxes: Tensor | None = None
    instance_labels: Tensor | None = None
    mentions: list[dict] = field(default_factory=list)


def _get(item, *names):
    for name in names:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        if value is not None:
            return value
    return None


def _tensor(value, dtype=None):
    if value is None:
        return None
    return torch.as_tensor(value) if dtype is None else torch.as_tensor(value, dtype=dtype)


def as_eval_sample(item, label_index: dict[str, int] | None = None) -> EvalSample:
    """Read one dataset item (object or dict) into an ``EvalSample``."""
    image, labels = _get(item, "image"), _get(item, "labels", "label")
    if image is None or labels is None:
        raise EvalDataError(f"a downstream item must have 'image' and 'labels'; got "
                            f"{sorted(item) if isinstance(item, dict) else type(item).__name__}")
    sentences = _get(item, "sentences")
    if sentences is None and _get(item, "report", "text") is not None:
        sentences = split_sentences(_get(item, "report", "text"))
    instance_labels = _get(item, "instance_labels", "box_labels")
    if instance_labels is None and _get(item, "instance_findings") is not None and label_index:
        instance_labels = [label_index[f] for f in _get(item, "instance_findings")]
    mentions = [m if isinstance(m, dict) else vars(m) for m in (_get(item, "mentions") or [])]
    return EvalSample(image=_tensor(image).float(), labels=_tensor(labels).float(),
                      sentences=list(sentences) if sentences is not None else None,
                      masks=_tensor(_get(item, "masks"), torch.bool),
                      boxes=_tensor(_get(item, "boxes"), torch.float32),
                      instance_labels=_tensor(instance_labels, torch.long), mentions=mentions)


class EvalView(Dataset):
    """A downstream dataset seen through ``as_eval_sample``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.label_names = list(getattr(dataset, "label_names"))
        self._label_kind = getattr(dataset, "label_kind", None)
        self._label_index = {n: i for i, n in enumerate(self.label_names)}

    @property
    def label_kind(self) -> str:
        """``multiclass`` when the dataset says so or every label row is one-hot over ≥ 2
        classes (COVIDx); else ``multilabel`` (CheXpert, SynthCXR; RSNA as one binary label)."""
        if self._label_kind is None:
            labels = dataset_labels(self)
            one_hot = labels.shape[1] >= 2 and bool((labels.sum(dim=1) == 1).all())
            self._label_kind = "multiclass" if one_hot else "multilabel"
        return self._label_kind

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> EvalSample:
        return as_eval_sample(self.dataset[index], self._label_index)


@dataclass
class Capabilities:
    reports: bool
    masks: bool
    boxes: bool
    mentions: bool


def capabilities(dataset: EvalView) -> Capabilities:
    """What the items of ``dataset`` carry (read from its first item)."""
    if len(dataset) == 0:
        raise EvalDataError("the downstream dataset is empty")
    first = dataset[0]
    return Capabilities(reports=first.sentences is not None, masks=first.masks is not None,
                        boxes=first.boxes is not None and first.instance_labels is not None,
                        mentions=bool(first.mentions) or first.masks is not None and first.sentences is not None)


def fraction_indices(labels: Tensor, fraction: float, seed: int) -> list[int]:
    """Positions of the seeded ``fraction`` subset of a split whose labels are ``labels`` (N, K).

    The data package's rule (``kgvlp.data.datasets.label_fraction``): nested across fractions
    for one seed, and every label with a positive in the split keeps at least one positive,
    so a 1% probe can still learn every label. Deviation from MGCA (pandas
    ``sample(frac, random_state=42)`` for all runs): each seed draws its own subset, so the
    spread over seeds includes the choice of labelled images.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    from kgvlp.data.datasets import label_fraction as data_label_fraction
    return data_label_fraction(labels.float().numpy(), fraction, seed)


def dataset_labels(dataset) -> Tensor:
    """(N, K) labels without decoding images where the dataset can (``labels_matrix``)."""
    inner = dataset.dataset if isinstance(dataset, EvalView) else dataset
    if hasattr(inner, "labels_matrix"):
        return torch.as_tensor(inner.labels_matrix()).float()
    return torch.stack([dataset[i].labels for i in range(len(dataset))])


def label_fraction(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The seeded ``fraction`` subset of ``dataset`` (see ``fraction_indices``); 1 = all."""
    if fraction >= 1:
        return dataset
    return Subset(dataset, fraction_indices(dataset_labels(dataset), fraction, seed))


def collate_samples(samples: list[EvalSample]) -> list[EvalSample]:
    """Keep samples as a list: tasks stack what they need (masks and boxes vary in count)."""
    return samples


def load_split(data, split: str, image_size: int, **kwargs) -> EvalView:
    """One split of a downstream dataset named by ``data`` (a registered name or a folder),
    via the data package's readers; an already-built Dataset is wrapped as it is."""
    if isinstance(data, EvalView):
        return data
    if isinstance(data, Dataset):
        return EvalView(data)
    if isinstance(data, dict):  # {split: Dataset}, e.g. from tests or the trainer
        if split not in data:
            raise EvalDataError(f"no {split!r} split given; have {sorted(data)}")
        return load_split(data[split], split, image_size)
    try:
        from kgvlp.data import build_downstream_dataset
    except ImportError as err:
        raise EvalDataError(f"cannot read downstream dataset {data!r}: kgvlp.data has no "
                            f"build_downstream_dataset ({err})") from None
    try:
        dataset = build_downstream_dataset(data, split=split, image_size=image_size, **kwargs)
    except (FileNotFoundError, KeyError, ValueError, OSError) as err:
        raise EvalDataError(f"downstream dataset {data!r}, split {split!r}: {err}") from err
    view = EvalView(dataset)
    if len(view) == 0:
        raise EvalDataError(f"downstream dataset {data!r}, split {split!r} is empty")
    try:  # files are opened lazily: read one item now, not deep inside a task's loader
        view[0]
    except (OSError, KeyError, ValueError) as err:
        raise EvalDataError(f"downstream dataset {data!r}, split {split!r}: cannot read its "
                            f"first item: {err}") from err
    return view


def load_splits(data, image_size: int, **kwargs) -> dict[str, EvalView]:
    return {split: load_split(data, split, image_size, **kwargs) for split in SPLITS}
