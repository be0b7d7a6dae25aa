"""KnowledgeBank: the UMLS concept embeddings as a service (provides ``Need.ENTITIES``).

The bank is what ``kgvlp knowledge embed`` wrote (``vectors.npy`` + ``meta.json``: CUIs in
row order, the fingerprint of the graph it was built for). It is loaded once, when the
model is built:

- the table is a frozen buffer (``trainable_table: true`` makes it a parameter);
- a trainable ``Linear`` projects rows into the text encoder's width;
- concepts of "category" semantic types (findings, diseases, devices) are clustered once
  with faiss k-means into ``num_categories`` knowledge categories (category_contrast).

Rows of the batch (``Batch.entity_ids``) are positions in the bank's CUI list; the data
side maps CUIs to rows with ``ConceptIndex`` (knowledge/bank_files.py), which counts CUIs missing from
the bank and warns once. A bank built for another graph fails on load naming both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from knowledge.bank_files import knowledge_paths
from kgvlp.models.features import Features, Need
from kgvlp.modules.service import Service, ServiceConfig

# Semantic types whose concepts are "findings" for categories and same-findings tests:
# Finding, Disease, Pathologic Function, Injury, Anatomical/Congenital Abnormality,
# Neoplastic Process, Sign or Symptom, Medical Device (SynthCXR labels support devices).
CATEGORY_TUIS = ("T019", "T033", "T037", "T046", "T047", "T074", "T184", "T190", "T191")


# ---------------------------------------------------------------------------------------
# the service


@dataclass
class KnowledgeBankConfig(ServiceConfig):
    # Keep these equal to data.knowledge_graph / data.knowledge_embeddings (the data side
    # maps CUIs to rows of the same bank). None = the bundled subset under cache_dir.
    embeddings: Optional[str] = None
    graph: Optional[str] = None       # checked against the bank's graph fingerprint
    cache_dir: str = ".kgvlp_cache"
    trainable_table: bool = False     # ours: frozen table, trainable projection
    num_categories: int = 8           # ours: k-means clusters of category concepts
    category_tuis: List[str] = field(default_factory=lambda: list(CATEGORY_TUIS))
    kmeans_iterations: int = 25
    seed: int = 0


@dataclass
class EntityFeatures:
    """The concepts linked in each report (E slots per report, padded).

    ids:       (B, E) long bank rows, -1 on padding
    valid:     (B, E) bool, a real concept
    vectors:   (B, E, Dt) concept vectors projected to the text width (0 on padding)
    negated / uncertain: (B, E) bool, from the report's wording
    word_mask: (B, E, W) bool, the words mentioning each concept (W word slots)
    finding:   (B, E) bool, the concept is of a category semantic type
    category:  (B, E) long knowledge category (k-means cluster), -1 if none
    category_vectors: (K, Dt) projected k-means centroids, one per category
    """
    batch_independent: ClassVar[frozenset[str]] = frozenset({"category_vectors"})
    ids: Tensor
    valid: Tensor
    vectors: Tensor
    negated: Tensor
    uncertain: Tensor
    word_mask: Tensor
    finding: Tensor
    category: Tensor
    category_vectors: Tensor

    @property
    def affirmed(self) -> Tensor:
        """(B, E) bool: real concepts stated as present (uncertain ones included)."""
        return self.valid & ~self.negated


def kmeans_categories(vectors: np.ndarray, is_category: np.ndarray, k: int, iterations: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means over the category concepts → (centroids (K, D), category per row (N,))."""
    import faiss
    rows = np.flatnonzero(is_category)
    if len(rows) == 0:
        rows = np.arange(len(vectors))
    k = max(1, min(k, len(rows)))
    data = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    kmeans = faiss.Kmeans(data.shape[1], k, niter=iterations, seed=seed, verbose=False,
                          min_points_per_centroid=1)
    kmeans.train(data)
    _, assigned = kmeans.index.search(data, 1)
    category = np.full(len(vectors), -1, dtype=np.int64)
    category[rows] = assigned[:, 0]
    return kmeans.centroids.copy(), category


class KnowledgeBank(Service):
    Config = KnowledgeBankConfig
    provides = Need.ENTITIES

    def __init__(self, cfg: KnowledgeBankConfig, model: nn.Module):
        super().__init__(cfg, model)
        from knowledge.embeddings import ConceptEmbeddings
        graph_path, embeddings_path = knowledge_paths(cfg.graph, cfg.embeddings, cfg.cache_dir)
        graph = None
        if cfg.graph is not None or graph_path.is_file():
            from knowledge import load_graph
            graph = load_graph(graph_path)
        try:
            bank = ConceptEmbeddings.load(embeddings_path, graph)
        except ValueError as err:   # wrong graph: name both files as well as both fingerprints
            raise ValueError(f"knowledge bank {embeddings_path} does not belong to graph {graph_path}: "
                             f"{err}") from None
        self.cuis = list(bank.cuis)
        table = torch.from_numpy(np.asarray(bank.vectors, dtype=np.float32))
        if cfg.trainable_table:
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table)
        tuis = set(cfg.category_tuis)
        if graph is not None:
            is_category = np.array([c in graph and bool(tuis & set(graph.nodes[c].get("tuis", [])))
                                    for c in self.cuis], dtype=bool)
        else:
            is_category = np.ones(len(self.cuis), dtype=bool)
        centroids, category = kmeans_categories(bank.vectors, is_category, cfg.num_categories,
                                                cfg.kmeans_iterations, cfg.seed)
        self.register_buffer("is_finding", torch.from_numpy(is_category))
        self.register_buffer("concept_category", torch.from_numpy(category))
        self.register_buffer("centroids", torch.from_numpy(centroids))
        self.projection = nn.Linear(table.shape[1], model.dims.text_width)

    @property
    def num_categories(self) -> int:
        return self.centroids.shape[0]

    def provide(self, model, batch, features: Features) -> EntityFeatures:
        if batch.entity_ids is None:
            raise ValueError("objectives need linked concepts (Need.ENTITIES) but the batch has none: set "
                             "data.entities to 'ground_truth' (SynthCXR) or 'linker'")
        ids = batch.entity_ids
        valid = ids >= 0
        rows = ids.clamp(min=0)
        vectors = self.projection(self.table[rows].to(self.projection.weight.dtype)) * valid[..., None]
        return EntityFeatures(
            ids=ids, valid=valid, vectors=vectors,
            negated=batch.entity_negated & valid, uncertain=batch.entity_uncertain & valid,
            word_mask=batch.entity_word_mask & valid[..., None],
            finding=self.is_finding[rows] & valid,
            category=torch.where(valid, self.concept_category[rows], -1),
            category_vectors=self.projection(self.centroids.to(self.projection.weight.dtype)))


# ---------------------------------------------------------------------------------------
# same-findings tests shared by itm, text_swap and category_contrast


def set_jaccard(ids_a: Tensor, keep_a: Tensor, ids_b: Tensor, keep_b: Tensor,
                empty_match: bool = True) -> Tensor:
    """Jaccard index of the concept sets of every pair of reports: (Ba, Bb) in [0, 1].

    ids_*: (B, E) rows (deduplicated per report); keep_*: (B, E) which slots count.
    Two empty sets score 1 with ``empty_match`` (both reports state no finding), else 0.
    """
    same = (ids_a[:, None, :, None] == ids_b[None, :, None, :]) \
        & keep_a[:, None, :, None] & keep_b[None, :, None, :]
    intersection = same.flatten(2).sum(-1).float()
    size_a, size_b = keep_a.sum(-1).float(), keep_b.sum(-1).float()
    union = size_a[:, None] + size_b[None, :] - intersection
    empty = union == 0
    return torch.where(empty, torch.full_like(union, float(empty_match)), intersection / union.clamp(min=1))


def label_jaccard(labels_a: Tensor, labels_b: Tensor, empty_match: bool = True) -> Tensor:
    """Jaccard index of multi-hot label sets, (Ba, Bb)."""
    a, b = (labels_a > 0).float(), (labels_b > 0).float()
    intersection = a @ b.t()
    union = a.sum(-1)[:, None] + b.sum(-1)[None, :] - intersection
    empty = union == 0
    return torch.where(empty, torch.full_like(union, float(empty_match)), intersection / union.clamp(min=1))


FINDINGS_SOURCES = ("entities", "labels", "none")


def findings_needs(source: str) -> frozenset[Need]:
    """The features ``findings_jaccard(source, …)`` reads."""
    return frozenset({"entities": {Need.ENTITIES}, "labels": {Need.LABELS}}.get(source, set()))


def findings_jaccard(source: str, features: Features, empty_match: bool = True) -> Tensor:
    """(B, B) Jaccard of the reports' findings, from affirmed finding concepts ('entities')
    or from the multi-hot labels ('labels'); identity only ('none')."""
    if source == "entities":
        entities: EntityFeatures = features.extras[Need.ENTITIES.value]
        keep = entities.affirmed & entities.finding
        return set_jaccard(entities.ids, keep, entities.ids, keep, empty_match)
    if source == "labels":
        return label_jaccard(features.labels, features.labels, empty_match)
    return torch.eye(features.batch_size, device=features.device)
