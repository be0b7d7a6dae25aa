"""Fixtures of the MLIP tests (see helpers.py)."""
from __future__ import annotations

import pytest

from mlip.helpers import write_bank


@pytest.fixture(scope="session")
def bank_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bank")
    write_bank(folder)
    return folder
