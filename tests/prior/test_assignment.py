"""The batched device assignment returns scipy's ``linear_sum_assignment`` solution for every
sample: the same pairs (ties included, as scipy breaks them), hence the same cost."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment as scipy_assignment

from kgvlp.modules.assignment import linear_sum_assignment


def scipy_col_for_row(cost: np.ndarray, row_mask: np.ndarray, col_mask: np.ndarray) -> np.ndarray:
    """scipy on each sample with its masked rows and columns deleted → (B, n), −1 = unassigned."""
    batch, rows, _ = cost.shape
    expected = np.full((batch, rows), -1)
    for b in range(batch):
        keep_rows, keep_cols = np.flatnonzero(row_mask[b]), np.flatnonzero(col_mask[b])
        if len(keep_rows) and len(keep_cols):
            r, c = scipy_assignment(cost[b][keep_rows][:, keep_cols])
            expected[b, keep_rows[r]] = keep_cols[c]
    return expected


def solve(cost: np.ndarray, row_mask=None, col_mask=None, dtype=torch.float64):
    row_mask = np.ones(cost.shape[:2], bool) if row_mask is None else row_mask
    col_mask = np.ones((cost.shape[0], cost.shape[2]), bool) if col_mask is None else col_mask
    out = linear_sum_assignment(torch.as_tensor(cost, dtype=dtype), torch.as_tensor(row_mask),
                                torch.as_tensor(col_mask))
    return out, scipy_col_for_row(cost, row_mask, col_mask)


def total_cost(cost: np.ndarray, col_for_row: np.ndarray) -> np.ndarray:
    rows = np.arange(cost.shape[1])
    return np.array([cost[b, rows[c >= 0], c[c >= 0]].sum() for b, c in enumerate(col_for_row)])


@pytest.mark.parametrize("shape", [(5, 6, 6), (5, 4, 7), (5, 7, 4), (1, 16, 16), (1, 1, 5), (3, 5, 1)])
def test_random_float_costs_get_scipys_assignment_and_cost(shape):
    cost = np.random.default_rng(0).random(shape)

    out, expected = solve(cost)

    assert out.col_for_row.tolist() == expected.tolist()
    np.testing.assert_allclose(total_cost(cost, out.col_for_row.numpy()), total_cost(cost, expected))


def test_row_for_col_is_the_inverse_matching():
    cost = np.random.default_rng(1).random((4, 3, 6))

    out, _ = solve(cost)

    for b in range(4):
        for row, col in enumerate(out.col_for_row[b].tolist()):
            assert out.row_for_col[b, col] == row
        assert (out.row_for_col[b] >= 0).sum() == 3                  # 3 columns stay free


@pytest.mark.parametrize("shape", [(20, 5, 5), (20, 4, 6), (20, 6, 4)])
def test_ties_are_broken_as_scipy_breaks_them(shape):
    cost = np.random.default_rng(2).integers(0, 3, size=shape).astype(float)   # many equal optima

    out, expected = solve(cost)

    assert out.col_for_row.tolist() == expected.tolist()


def test_a_constant_matrix_gets_the_identity_as_in_scipy():
    out, expected = solve(np.ones((1, 4, 4)))

    assert out.col_for_row.tolist() == [[0, 1, 2, 3]] == expected.tolist()


def test_masked_rows_and_columns_are_solved_as_if_deleted():
    generator = np.random.default_rng(3)
    cost = generator.integers(0, 4, size=(30, 6, 5)).astype(float)
    row_mask, col_mask = generator.random((30, 6)) < 0.7, generator.random((30, 5)) < 0.7
    cost[~row_mask] = np.nan                       # masked entries are never used

    out, expected = solve(cost, row_mask, col_mask)

    assert out.col_for_row.tolist() == expected.tolist()
    assert (out.col_for_row[torch.as_tensor(~row_mask)] == -1).all()


def test_prototype_generation_slots_queries_against_a_variable_number_of_sentences():
    # As prototype_generation calls it: Q = 8 queries (rows) × S = 8 slots (columns), of which
    # each report fills its first n_b; a full report is square (scipy does not transpose),
    # the others are tall (scipy transposes): both orientations in one batch.
    generator = np.random.default_rng(4)
    sentences = np.array([8, 3, 1, 0, 5, 8])
    col_mask = np.arange(8)[None] < sentences[:, None]
    cost = generator.random((6, 8, 8))

    out, expected = solve(cost, col_mask=col_mask)

    assert out.row_for_col.tolist() == [[int(np.flatnonzero(expected[b] == j)[0]) if col_mask[b, j] else -1
                                         for j in range(8)] for b in range(6)]
    assert ((out.col_for_row >= 0).sum(1) == torch.as_tensor(sentences)).all()


def test_float32_costs_are_solved_in_float64_as_scipy_does():
    cost32 = np.random.default_rng(5).random((8, 6, 6)).astype(np.float32)

    out, expected = solve(cost32, dtype=torch.float32)

    assert out.col_for_row.tolist() == expected.tolist()


def test_the_batch_does_not_change_a_samples_solution():
    cost = np.random.default_rng(6).random((7, 5, 5))

    alone = [linear_sum_assignment(torch.as_tensor(cost[b:b + 1])).col_for_row[0] for b in range(7)]

    assert torch.equal(torch.stack(alone), linear_sum_assignment(torch.as_tensor(cost)).col_for_row)


def test_a_cost_that_is_not_a_batch_of_matrices_is_refused():
    with pytest.raises(ValueError, match="batch, rows, columns"):
        linear_sum_assignment(torch.zeros(3, 3))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), levels=st.sampled_from([2, 5, 1000]),
       seed=st.integers(0, 2**31 - 1))
def test_any_small_batch_matches_scipy(rows, cols, levels, seed):
    generator = np.random.default_rng(seed)
    cost = generator.integers(0, levels, size=(3, rows, cols)).astype(float) / levels
    row_mask, col_mask = generator.random((3, rows)) < 0.8, generator.random((3, cols)) < 0.8

    out, expected = solve(cost, row_mask, col_mask)

    assert out.col_for_row.tolist() == expected.tolist()


# ---------------------------------------------------------------------------------------
# the one-launch Triton kernel (kgvlp/modules/assignment_triton.py)

TRITON_CHECK = """
import numpy as np, torch
from kgvlp.modules.assignment import linear_sum_assignment
from test_assignment import scipy_col_for_row
generator = np.random.default_rng(7)
for trial in range(24):
    shape = (int(generator.integers(1, 4)), int(generator.integers(1, 7)), int(generator.integers(1, 7)))
    cost = generator.integers(0, 3, size=shape) / 2 if trial % 2 else generator.random(shape)
    rows, cols = generator.random(shape[:2]) < 0.8, generator.random((shape[0], shape[2])) < 0.8
    got = linear_sum_assignment(torch.as_tensor(cost), torch.as_tensor(rows), torch.as_tensor(cols),
                                solver="triton").col_for_row
    assert got.tolist() == scipy_col_for_row(cost, rows, cols).tolist(), (cost, rows, cols, got)
print("triton kernel matches scipy")
"""


def test_the_triton_kernel_matches_scipy_in_the_interpreter():
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1",        # must be set before triton is imported
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])}

    done = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True,
                          timeout=600)

    assert done.returncode == 0 and "matches scipy" in done.stdout, done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernel needs a CUDA device")
def test_the_compiled_triton_kernel_matches_scipy_on_the_gpu():
    generator = np.random.default_rng(8)
    cost = np.concatenate([generator.random((64, 16, 16)), generator.integers(0, 3, (64, 16, 16)) / 2.0])
    cols = np.arange(16)[None] < generator.integers(0, 17, (128, 1))

    got = linear_sum_assignment(torch.as_tensor(cost, device="cuda"), col_mask=torch.as_tensor(cols, device="cuda"),
                                solver="triton")

    assert got.col_for_row.cpu().tolist() == scipy_col_for_row(cost, np.ones((128, 16), bool), cols).tolist()


def test_an_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="'torch' or 'triton'"):
        linear_sum_assignment(torch.zeros(1, 2, 2), solver="auction")


def test_prototype_generation_refuses_an_unknown_matcher():
    from kgvlp.objectives.prototype_generation import PrototypeGeneration, PrototypeGenerationConfig
    from prior.helpers import dims

    with pytest.raises(ValueError, match="matcher: 'scipy', expected torch | triton"):
        PrototypeGeneration(PrototypeGenerationConfig(num_heads=1, matcher="scipy"), dims(4))
