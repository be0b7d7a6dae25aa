"""Where the knowledge bank lives on disk and which bank row a CUI is.

The dataset links reports to bank rows with these before any model exists, and the
knowledge-bank service (kgvlp/modules/knowledge_bank.py) reads the same files. They live
in the standalone knowledge package so that kgvlp.data needs neither models nor services
and objectives (through the service) never reach kgvlp.data (import-linter contracts).
"""
from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections import Counter
from pathlib import Path



def knowledge_paths(graph: str | None, embeddings: str | None, cache_dir: str = ".kgvlp_cache",
                    build: bool = True) -> tuple[Path, Path]:
    """(graph file, embeddings folder). ``None`` means the bundled UMLS subset: its graph and
    embeddings are built once into ``<cache_dir>/knowledge/`` (under a lock, so several
    ranks may call this together)."""
    if graph is not None and embeddings is not None:
        return Path(graph), Path(embeddings)
    folder = Path(cache_dir) / "knowledge"
    graph_path = Path(graph) if graph is not None else folder / "bundled_graph.json"
    embeddings_path = Path(embeddings) if embeddings is not None else folder / f"{graph_path.stem}_embeddings"
    if not build or (graph_path.is_file() and (embeddings_path / "meta.json").is_file()):
        return graph_path, embeddings_path
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            from knowledge import build_graph, load_graph, save_graph
            if not graph_path.is_file():
                save_graph(build_graph(None), graph_path)
            if not (embeddings_path / "meta.json").is_file():
                from knowledge.embeddings import ConceptEmbeddings
                ConceptEmbeddings.build(load_graph(graph_path)).save(embeddings_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return graph_path, embeddings_path


def read_bank_meta(embeddings: str | os.PathLike) -> dict:
    path = Path(embeddings) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{embeddings} holds no concept embeddings (no meta.json); build them "
                                "with `kgvlp knowledge embed --graph GRAPH --out FOLDER`")
    return json.loads(path.read_text())


class ConceptIndex:
    """CUI → row of the bank. CUIs not in the bank map to -1, are counted in ``missing``,
    and produce one warning per index (build one per run: the dataset does)."""

    def __init__(self, cuis: list[str], source: str = "the knowledge bank"):
        self.row = {c: i for i, c in enumerate(cuis)}
        self.source = source
        self.missing: Counter = Counter()
        self._warned = False

    @classmethod
    def from_embeddings(cls, embeddings: str | os.PathLike) -> "ConceptIndex":
        return cls(read_bank_meta(embeddings)["cuis"], source=str(embeddings))

    def __len__(self) -> int:
        return len(self.row)

    def lookup(self, cui: str) -> int:
        row = self.row.get(cui, -1)
        if row < 0:
            self.missing[cui] += 1
        return row

    def warn_missing(self) -> None:
        """One warning naming the count and the most frequent missing CUIs (rank 0 only)."""
        if self.missing and not self._warned and int(os.environ.get("RANK", "0")) == 0:
            common = ", ".join(f"{c} ×{n}" for c, n in self.missing.most_common(5))
            warnings.warn(f"{sum(self.missing.values())} concept mentions ({len(self.missing)} distinct "
                          f"CUIs) are not in {self.source} and were skipped: {common}", stacklevel=2)
            self._warned = True
