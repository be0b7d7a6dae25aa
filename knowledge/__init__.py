"""UMLS knowledge for kgvlp: RRF reader, concept graph, report linking, concept embeddings.

Heavy dependencies (spaCy/scispacy, torch, faiss) load only when their objects are used.
"""
from knowledge.graph import (CHEST_TUIS, bundled_meta_dir, graph_fingerprint, graph_stats,
                             k_hop, load_graph, save_graph)
from knowledge.graph_build import build_graph
from knowledge.rrf import ParseReport

__all__ = ["CHEST_TUIS", "ConceptEmbeddings", "Linker", "Mention", "ParseReport", "build_graph",
           "bundled_meta_dir", "graph_fingerprint", "graph_stats", "k_hop", "load_graph",
           "save_graph"]


def __getattr__(name: str):
    if name in ("Linker", "Mention"):
        from knowledge import linking
        return getattr(linking, name)
    if name == "ConceptEmbeddings":
        from knowledge.embeddings import ConceptEmbeddings
        return ConceptEmbeddings
    raise AttributeError(f"module 'knowledge' has no attribute {name!r}")
