"""Fixtures for the eval tests (helpers live in eval_fixtures.py)."""
import pytest

from eval_fixtures import TinyFindings, make_tiny_model


@pytest.fixture(scope="session")
def tiny_splits():
    return {"train": TinyFindings(24, seed=1), "val": TinyFindings(8, seed=2), "test": TinyFindings(16, seed=3)}


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()
