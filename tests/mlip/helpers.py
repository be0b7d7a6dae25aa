"""Tiny MLIP fixtures shared by the tests and their spawned ranks: a knowledge bank on disk
(a 12-concept graph with random vectors, no MiniLM), batches with linked concepts and a
second view, and a tiny model with any MLIP objectives."""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import torch

from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.entities import ReportEntities, entity_tensors
from kgvlp.modules.divergence import DivergenceConfig
from kgvlp.modules.knowledge_bank import KnowledgeBankConfig

IMAGE_SIZE, MAX_LENGTH, MAX_ENTITIES = 64, 32, 4
# name, semantic type: findings (T047/T033/T046) and two anatomy concepts (T023).
CONCEPTS = [("C0000001", "effusion", "T047"), ("C0000002", "pneumothorax", "T047"),
            ("C0000003", "cardiomegaly", "T033"), ("C0000004", "consolidation", "T033"),
            ("C0000005", "atelectasis", "T046"), ("C0000006", "edema", "T046"),
            ("C0000007", "nodule", "T033"), ("C0000008", "mass", "T033"),
            ("C0000009", "lung", "T023"), ("C0000010", "heart", "T023"),
            ("C0000011", "catheter", "T074"), ("C0000012", "emphysema", "T047")]
REPORTS = [
    ["small left pleural effusion", "the heart is enlarged", "no pneumothorax"],
    ["lungs are clear", "no pleural effusion or pneumothorax"],
    ["right lower lobe consolidation", "heart size is normal", "no effusion"],
    ["small left pleural effusion", "the heart is enlarged", "no pneumothorax"],
    ["bibasilar atelectasis and mild edema", "stable nodule in the right upper lobe"],
    ["lungs are clear", "no pleural effusion or pneumothorax"],
    ["central line tip in the svc", "no focal consolidation"],
    ["large mass in the left upper lobe", "small effusion", "no pneumothorax"],
]
# Per report: (concept row, negated, uncertain, word indices in the report's cleaned words).
MENTIONS = [
    [(0, False, False, [2, 3]), (2, False, False, [5, 7]), (1, True, False, [9])],
    [(0, True, False, [5, 6]), (1, True, False, [8])],
    [(3, False, False, [3]), (2, True, False, [4, 5]), (0, True, False, [10])],
    [(0, False, False, [2, 3]), (2, False, False, [5, 7]), (1, True, False, [9])],
    [(4, False, False, [1]), (5, False, True, [4]), (6, False, False, [7])],
    [(0, True, False, [5, 6]), (1, True, False, [8])],
    [(10, False, False, [1]), (3, True, False, [8])],
    [(7, False, False, [1]), (0, False, False, [9]), (1, True, False, [11])],
]


def write_bank(folder: Path, graph_edges=((0, 1),), seed: int = 0) -> tuple[Path, Path]:
    """A saved graph + concept embeddings for it (random vectors, 24-d)."""
    from knowledge import graph_fingerprint, save_graph
    from knowledge.embeddings import ConceptEmbeddings
    graph = nx.MultiDiGraph()
    for cui, name, tui in CONCEPTS:
        graph.add_node(cui, name=name, aliases=[], tuis=[tui], stys=[], sabs=["TEST"], definition="")
    for u, v in graph_edges:
        graph.add_edge(CONCEPTS[u][0], CONCEPTS[v][0], key="RO", rel="RO", rela="")
    folder.mkdir(parents=True, exist_ok=True)
    save_graph(graph, folder / "graph.json")
    vectors = np.random.default_rng(seed).standard_normal((len(CONCEPTS), 24)).astype(np.float32)
    ConceptEmbeddings([c for c, _, _ in CONCEPTS], vectors, graph_fingerprint(graph), 16,
                      [n for _, n, _ in CONCEPTS]).save(folder / "embeddings")
    return folder / "graph.json", folder / "embeddings"


def bank_config(folder: Path, num_categories: int = 3) -> KnowledgeBankConfig:
    return KnowledgeBankConfig(embeddings=str(folder / "embeddings"), graph=str(folder / "graph.json"),
                               num_categories=num_categories)


def model_config(folder: Path, queue_size: int = 0, image: str = "vit_test") -> ModelConfig:
    return ModelConfig(image=ImageEncoderConfig(name=image, image_size=IMAGE_SIZE),
                       text=TextEncoderConfig(max_length=MAX_LENGTH, num_layers=2, dropout=0.0),
                       services={"knowledge_bank": bank_config(folder),
                                 "divergence": DivergenceConfig(queue_size=queue_size)})


def make_samples(size: int = 8, seed: int = 0, offset: int = 0) -> list[Sample]:
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(size):
        k = (i + offset) % len(REPORTS)
        rows, negated, uncertain, words = zip(*MENTIONS[k])
        entities = entity_tensors(ReportEntities(list(rows), list(negated), list(uncertain), [list(w) for w in words]),
                                  None, MAX_ENTITIES, 4)
        image = torch.randn(1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        samples.append(Sample(image=image, sentences=REPORTS[k], index=i,
                              image_view2=image + 0.1 * torch.randn(image.shape, generator=generator),
                              labels=torch.zeros(3), **entities))
    return samples


def make_batch(tokenizer, size: int = 8, seed: int = 0, offset: int = 0):
    return Collator(tokenizer, MAX_LENGTH)(make_samples(size, seed, offset))


def make_model(folder: Path, objectives: dict, seed: int = 0, queue_size: int = 0, image: str = "vit_test"):
    from kgvlp.models.vlp import VLPModel
    from kgvlp.objectives import REGISTRY
    torch.manual_seed(seed)
    return VLPModel(model_config(folder, queue_size, image), objectives, REGISTRY)
