"""Split manifests: which image IDs a paper's protocol puts in each split and label subset.

A manifest holds image IDs only (never images or labels, so it can be shared for
restricted datasets), the sha256 of each source list it was built from (to tell dataset
versions apart), and a content hash over the IDs that every result row and table quotes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Subset:
    """The labelled training subset of one label fraction; ``seed`` is None where the
    protocol draws it independently of the run's seed (MGCA classification)."""
    fraction: float
    seed: int | None
    ids: list[str]


@dataclass
class SplitManifest:
    protocol: str
    dataset: str
    task: str                                   # classification | detection | segmentation | zero_shot
    splits: dict[str, list[str]]                # train / val / test → IDs in the order the protocol iterates them
    subsets: list[Subset] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)   # source file name → sha256 of its bytes
    notes: list[str] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        """sha256 of the IDs (splits and subsets) with what they mean (protocol, dataset, task)."""
        body = {"protocol": self.protocol, "dataset": self.dataset, "task": self.task, "splits": self.splits,
                "subsets": [asdict(s) for s in self.subsets], "class_names": self.class_names}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def subset(self, fraction: float, seed: int) -> list[str]:
        """Train IDs of ``fraction`` for a run with ``seed``."""
        for s in self.subsets:
            if abs(s.fraction - fraction) < 1e-12 and s.seed in (None, seed):
                return s.ids
        have = sorted({(s.fraction, s.seed) for s in self.subsets}, key=str)
        raise KeyError(f"{self.dataset}/{self.task} manifest has no subset for fraction {fraction:g}, "
                       f"seed {seed}; it has (fraction, seed) {have}")

    def to_json(self) -> dict:
        return {**asdict(self), "content_hash": self.content_hash}

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / f"{self.protocol}_{self.dataset}_{self.task}.manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> "SplitManifest":
        data = json.loads(Path(path).read_text())
        stored = data.pop("content_hash", None)
        manifest = cls(**{**data, "subsets": [Subset(**s) for s in data.get("subsets", [])]})
        if stored is not None and stored != manifest.content_hash:
            raise ValueError(f"{path}: content_hash {stored[:12]}… does not match its IDs "
                             f"({manifest.content_hash[:12]}…): the file was edited")
        return manifest


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
