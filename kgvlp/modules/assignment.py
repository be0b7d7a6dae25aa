"""Batched exact linear assignment on the device, the same solution as scipy's.

``scipy.optimize.linear_sum_assignment`` solves one cost matrix at a time on the host
(Crouse's shortest-augmenting-path algorithm, a Jonker–Volgenant variant, in float64).
PRIOR matches every report of a batch in every step, so calling it means copying the
costs to the host, waiting for them, looping in Python and copying back.

``linear_sum_assignment`` below runs the *same* algorithm for a whole batch with
fixed-shape tensor ops: the same float64 arithmetic in the same order, the same
tie-breaking, the same per-sample orientation (scipy transposes a matrix with fewer
columns than rows). It therefore returns scipy's assignment for every sample, ties
included — not merely an assignment of the same cost. Its loop structure depends only on
the matrix size N = max(n, m), never on the data: row r's augmenting-path search runs
r + 1 batched steps (the longest path it can need), samples already done step as no-ops,
and nothing reads a value back to the host. Cost: N(N + 1)/2 search steps of a few
[B, N] ops each (136 for N = 16), whatever B is.

Tie-breaking (scipy's, reproduced): row by row in index order; within a search the
column with the lowest reduced path cost is taken, preferring, among equal lowest
costs, a free column (the last such in scipy's scan order), else the first in scan order.
The scan order starts at the highest column index and changes as taken columns are
swapped out (a constant matrix gets the identity). Masked rows and columns take no part:
a sample is solved as if its masked rows and columns had been deleted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass
class Assignment:
    """The matching of each sample, fixed shape.

    col_for_row: (B, n) long, the column assigned to each row, −1 where none (masked
                 rows, or the surplus rows of a tall matrix)
    row_for_col: (B, m) long, the row assigned to each column, −1 where none
    """
    col_for_row: Tensor
    row_for_col: Tensor


def _full_mask(mask: Tensor | None, batch: int, size: int, device) -> Tensor:
    if mask is None:
        return torch.ones(batch, size, dtype=torch.bool, device=device)
    return mask.to(device=device, dtype=torch.bool)


def _orient(cost: Tensor, row_mask: Tensor, col_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Place every sample in an N × N frame with its shorter valid side as the rows (scipy
    transposes when it has fewer columns than rows). Returns the float64 frame, its row and
    column masks, and the (B,) bool ``transposed``."""
    batch, rows, cols = cost.shape
    size = max(rows, cols)
    frame = cost.new_zeros((batch, size, size), dtype=torch.float64)
    frame[:, :rows, :cols] = cost.to(torch.float64)
    frame_rows = row_mask.new_zeros(batch, size)
    frame_cols = col_mask.new_zeros(batch, size)
    frame_rows[:, :rows], frame_cols[:, :cols] = row_mask, col_mask
    transposed = col_mask.sum(1) < row_mask.sum(1)
    flip = transposed[:, None, None]
    frame = torch.where(flip, frame.transpose(1, 2), frame)
    frame_rows, frame_cols = (torch.where(transposed[:, None], frame_cols, frame_rows),
                              torch.where(transposed[:, None], frame_rows, frame_cols))
    return frame, frame_rows, frame_cols, transposed


def linear_sum_assignment(cost: Tensor, row_mask: Tensor | None = None,
                          col_mask: Tensor | None = None, solver: str | Callable = "torch") -> Assignment:
    """Minimum-cost assignment of every (n, m) matrix of a (B, n, m) batch.

    ``row_mask`` (B, n) / ``col_mask`` (B, m), True = takes part (default: all). Costs must
    be finite on the unmasked entries; masked entries (even NaN) never affect the result.
    Each sample gets min(valid rows, valid columns) pairs, exactly those of
    ``scipy.optimize.linear_sum_assignment(cost[b][rows_b][:, cols_b])``. Runs on
    ``cost.device`` in float64 without host synchronisation.

    ``solver``: "torch" (fixed-shape tensor ops, any device) or "triton" (one kernel launch,
    CUDA; ``kgvlp.modules.assignment_triton``), or a callable with ``_solve``'s signature.
    """
    if cost.dim() != 3:
        raise ValueError(f"linear_sum_assignment: expected a (batch, rows, columns) cost, got shape "
                         f"{tuple(cost.shape)}")
    batch, rows, cols = cost.shape
    device = cost.device
    row_mask = _full_mask(row_mask, batch, rows, device)
    col_mask = _full_mask(col_mask, batch, cols, device)
    frame, row_valid, col_valid, transposed = _orient(cost, row_mask, col_mask)
    size = frame.shape[1]
    # The valid rows first, in their order (a sample solved as if the others were deleted):
    # then only the first min(n, m) frame rows can hold one, and the loop stops there.
    order = (~row_valid).long().sort(dim=1, stable=True).indices
    packed = frame.gather(1, order[..., None].expand(-1, -1, size))
    packed_col4row = _solver(solver)(packed, row_valid.gather(1, order), col_valid, min(rows, cols))
    col4row = torch.empty_like(packed_col4row).scatter_(1, order, packed_col4row)  # (B, N) in the frame
    row4col = _invert(col4row, size)
    # Back from the frame: a transposed sample's frame rows are the original columns.
    col_for_row = torch.where(transposed[:, None], row4col, col4row)[:, :rows]
    row_for_col = torch.where(transposed[:, None], col4row, row4col)[:, :cols]
    return Assignment(col_for_row=col_for_row, row_for_col=row_for_col)


def _solver(solver: str | Callable) -> Callable:
    if callable(solver):
        return solver
    if solver == "torch":
        return _solve
    if solver == "triton":
        from kgvlp.modules import assignment_triton
        if not assignment_triton.available():
            raise RuntimeError("linear_sum_assignment: solver 'triton' needs the triton package "
                               "(shipped with CUDA builds of torch); use solver 'torch'")
        return assignment_triton.solve
    raise ValueError(f"linear_sum_assignment: solver {solver!r}: expected 'torch' or 'triton'")


def _invert(col4row: Tensor, size: int) -> Tensor:
    """(B, N) column of each row (−1 = none) → (B, N) row of each column (−1 = none)."""
    batch = col4row.shape[0]
    rows = torch.arange(size, device=col4row.device).expand(batch, size)
    assigned = col4row >= 0
    # Unassigned rows write into a spare slot N that is cut off afterwards.
    target = torch.where(assigned, col4row, size)
    row4col = col4row.new_full((batch, size + 1), -1)
    row4col.scatter_(1, target, torch.where(assigned, rows, -1))
    return row4col[:, :size]


def _solve(cost: Tensor, row_valid: Tensor, col_valid: Tensor, rows_needed: int) -> Tensor:
    """Crouse's shortest augmenting path (scipy's ``rectangular_lsap.cpp``) over a batch of
    N × N frames whose valid rows never outnumber their valid columns and all lie in the
    first ``rows_needed`` rows → (B, N) col4row."""
    batch, size, _ = cost.shape
    device = cost.device
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=device)
    positions = torch.arange(size, device=device).expand(batch, size)
    u = cost.new_zeros(batch, size)
    v = cost.new_zeros(batch, size)
    col4row = torch.full((batch, size), -1, dtype=torch.long, device=device)
    row4col = torch.full((batch, size), -1, dtype=torch.long, device=device)
    # scipy's scan list at the start of every search: the valid columns, highest index first.
    scan_start = torch.where(col_valid, size - 1 - positions, 2 * size).sort(1).values
    scan_start = torch.where(scan_start < size, size - 1 - scan_start, 0)
    valid_cols = col_valid.sum(1)

    for cur_row in range(rows_needed):
        solving = row_valid[:, cur_row]                                   # (B,) this row takes part
        remaining, num_remaining = scan_start, valid_cols
        path = torch.full((batch, size), -1, dtype=torch.long, device=device)
        shortest = torch.full((batch, size), float("inf"), dtype=torch.float64, device=device)
        seen_rows = torch.zeros(batch, size, dtype=torch.bool, device=device)
        seen_cols = torch.zeros(batch, size, dtype=torch.bool, device=device)
        min_val = cost.new_zeros(batch)
        row = torch.full((batch,), cur_row, dtype=torch.long, device=device)
        sink = torch.full((batch,), -1, dtype=torch.long, device=device)
        searching = solving
        # Row cur_row's path visits at most the cur_row rows assigned so far, then a free column.
        for _ in range(cur_row + 1):
            seen_rows = seen_rows | (searching[:, None] & (positions == row[:, None]))
            row_cost = cost.gather(1, row[:, None, None].expand(batch, 1, size))[:, 0]
            reduced = (min_val[:, None] + row_cost) - u.gather(1, row[:, None]) - v
            better = searching[:, None] & col_valid & ~seen_cols & (reduced < shortest)
            path = torch.where(better, row[:, None], path)
            shortest = torch.where(better, reduced, shortest)
            # Pick in scan order: lowest cost; among equals the last free column, else the first.
            in_list = positions < num_remaining[:, None]
            scanned = torch.where(in_list, shortest.gather(1, remaining), inf)
            lowest = scanned.min(1, keepdim=True).values
            at_lowest = in_list & (scanned == lowest)
            free_at_lowest = at_lowest & (row4col.gather(1, remaining) < 0)
            last_free = torch.where(free_at_lowest, positions, -1).max(1, keepdim=True).values
            first = torch.where(at_lowest, positions, size - 1).min(1, keepdim=True).values
            index = torch.where(last_free >= 0, last_free, first)            # (B, 1)
            column = remaining.gather(1, index)                              # (B, 1)
            min_val = torch.where(searching, lowest[:, 0], min_val)
            owner = row4col.gather(1, column)[:, 0]
            found = searching & (owner < 0)
            sink = torch.where(found, column[:, 0], sink)
            row = torch.where(searching & ~found, owner, row)
            seen_cols = seen_cols | (searching[:, None] & (positions == column))
            # Swap-remove the taken column from the scan list (scipy's order of later scans).
            moved = remaining.gather(1, (num_remaining[:, None] - 1).clamp(min=0))
            remaining = torch.where(searching[:, None] & (positions == index), moved, remaining)
            num_remaining = num_remaining - searching.long()
            searching = searching & ~found

        # Dual update, in scipy's order of floating-point operations.
        shortest_own = shortest.gather(1, col4row.clamp(min=0))
        others = solving[:, None] & seen_rows & (positions != cur_row)
        u = torch.where(others, u + (min_val[:, None] - shortest_own), u)
        u = torch.where(solving[:, None] & (positions == cur_row), u + min_val[:, None], u)
        v = torch.where(solving[:, None] & seen_cols, v - (min_val[:, None] - shortest), v)

        # Augment along the path back from the sink to cur_row.
        column = sink.clamp(min=0)[:, None]
        augmenting = solving[:, None]
        for _ in range(cur_row + 1):
            row = path.gather(1, column).clamp(min=0)                        # (B, 1)
            row4col = torch.where(augmenting & (positions == column), row, row4col)
            previous = col4row.gather(1, row)
            col4row = torch.where(augmenting & (positions == row), column, col4row)
            column = torch.where(augmenting, previous, column).clamp(min=0)
            augmenting = augmenting & (row != cur_row)
    return col4row
