"""Hostile input: pickle payloads where the old linker index lived are never loaded."""
import json
import pickle
import tempfile
from pathlib import Path

import knowledge
from knowledge.linking import Linker


class _CreatesFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_old_index(folder: Path, fingerprint: str, marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(_CreatesFile(marker))
    for name in ("tfidf_vectorizer.joblib", "nmslib_index.bin", "tfidf_vectors_sparse.npz"):
        (folder / name).write_bytes(payload)
    (folder / "concept_aliases.json").write_text("[]")
    (folder / "fingerprint.json").write_text(json.dumps({"graph": fingerprint, "aliases": 0}))


def _tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_size) for p in folder.rglob("*"))


def test_pickle_payload_beside_a_graph_or_in_the_temp_dir_is_never_run(tmp_path, bundled_graph):
    graph_file = tmp_path / "g.jsonl.gz"
    knowledge.save_graph(bundled_graph, graph_file)
    fingerprint = knowledge.graph_fingerprint(bundled_graph)
    marker = tmp_path / "payload-ran"
    _plant_old_index(tmp_path / "g.jsonl.gz.linker", fingerprint, marker)
    shared_tmp = Path(tempfile.gettempdir()) / f"kgvlp-linker-{fingerprint}"
    existed = shared_tmp.exists()
    before = _tree(tmp_path)

    mentions = Linker(graph_file).link("No pneumothorax.") + Linker(bundled_graph).link("No pneumothorax.")

    assert not marker.exists()
    assert _tree(tmp_path) == before                 # nothing read back, nothing written
    assert shared_tmp.exists() == existed            # no predictable shared folder is created
    assert [m.negated for m in mentions] == [True, True]
