"""Concept embeddings: shape, nearest lookup by CUI and text, refusal for another graph."""
import numpy as np
import pytest

import knowledge


@pytest.fixture(scope="module")
def bank(bundled_graph):
    return knowledge.ConceptEmbeddings.build(bundled_graph, graph_dim=16, epochs=20)


def test_vectors_align_with_cuis_and_nearest_finds_itself(bank, bundled_graph):
    assert bank.vectors.dtype == np.float32 and bank.vectors.shape == (bundled_graph.number_of_nodes(), 384 + 16)

    [[(cui, _), *_]] = bank.nearest("C2073625", k=3)

    assert cui == "C2073625"


def test_text_query_finds_the_named_concept(bank):
    [hits] = bank.nearest("pneumothorax", k=3)

    assert "C2073565" in [c for c, _ in hits]


def test_load_refuses_a_bank_built_for_another_graph(bank, bundled_graph, tmp_path):
    bank.save(tmp_path)
    other = knowledge.k_hop(bundled_graph, ["C2073625"], 1)

    with pytest.raises(ValueError, match=bank.graph_fingerprint):
        knowledge.ConceptEmbeddings.load(tmp_path, other)
    assert knowledge.ConceptEmbeddings.load(tmp_path, bundled_graph).cuis == bank.cuis
