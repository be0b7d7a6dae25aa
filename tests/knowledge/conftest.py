import pytest

import knowledge


@pytest.fixture(scope="session")
def bundled_graph():
    return knowledge.build_graph()


@pytest.fixture(scope="session")
def linker(bundled_graph, tmp_path_factory):
    return knowledge.Linker(bundled_graph, index_dir=tmp_path_factory.mktemp("linker"))
