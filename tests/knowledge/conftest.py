import pytest

import knowledge


@pytest.fixture(scope="session")
def bundled_graph():
    return knowledge.build_graph()


@pytest.fixture(scope="session")
def linker(bundled_graph):
    return knowledge.Linker(bundled_graph)


@pytest.fixture(scope="session")
def name_of(bundled_graph):
    """CUI → preferred name, so tests read in words."""
    return lambda cui: bundled_graph.nodes[cui]["name"]
