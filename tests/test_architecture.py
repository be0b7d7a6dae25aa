"""The layer rules of DESIGN.md hold: import-linter's contracts (.importlinter) are kept
(the check .ci/run and pre-commit make before the tests, beside ``ruff check .``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess:
    """``command`` in the repository root, on this tree's packages (not an installed copy)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def test_every_layer_contract_is_kept():
    result = run(str(Path(sys.executable).with_name("lint-imports")))

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("contract", ["The engine knows no objective", "Objectives see Features, never data",
                                      "No objective imports another objective", "Ablation and the benchmark",
                                      "Knowledge stands alone"])
def test_the_contracts_name_the_design_rules(contract):
    assert contract in (ROOT / ".importlinter").read_text()

