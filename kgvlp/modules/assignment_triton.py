"""The batched assignment of ``kgvlp.modules.assignment`` as one Triton kernel launch.

The tensor version runs K(K + 1)/2 search steps of ~50 small ops each: on a GPU that is
thousands of kernel launches per call (≈ 6,800 at 16 queries), launch-bound. Here one
program per sample runs the same algorithm (scipy's shortest augmenting path) with its
state in registers: data-dependent loops are fine inside a program, so each search stops
at its sink instead of running the worst-case step count. Same float64 operations in the
same order, same tie-breaking, hence the same assignment as scipy and as the tensor
version (the tests compare all three; on a CPU they run this kernel in Triton's
interpreter, ``TRITON_INTERPRET=1``; on a GPU compiled).

Vectors are indexed by column (or row) and held in one BLOCK-wide register tile; a read of
element ``k`` is a masked reduction (``max(where(offs == k, x, -2))``), which gives that
element exactly, and scipy's scan list is kept as each column's position in it (``pos``).
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:          # Triton ships with CUDA builds of torch; CPU builds may lack it
    triton = tl = None


def _lsap_kernel(cost_ptr, row_valid_ptr, col_valid_ptr, col4row_ptr, size, rows_needed,
                 BLOCK: tl.constexpr):
    sample = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    inside = offs < size
    row_valid = tl.load(row_valid_ptr + sample * size + offs, mask=inside, other=0)
    col_valid = tl.load(col_valid_ptr + sample * size + offs, mask=inside, other=0) != 0
    zeros_i = tl.zeros([BLOCK], dtype=tl.int32)
    zeros_f = tl.zeros([BLOCK], dtype=tl.float64)
    # scipy's scan list starts at the highest valid column: position = valid columns above.
    above = (offs[None, :] > offs[:, None]) & col_valid[None, :]
    scan_start = tl.sum(above.to(tl.int32), axis=1)
    valid_cols = tl.sum(col_valid.to(tl.int32), axis=0)
    u = zeros_f
    v = zeros_f
    col4row = zeros_i - 1
    row4col = zeros_i - 1
    for cur_row in range(0, rows_needed):
        solving = tl.max(tl.where(offs == cur_row, row_valid, 0), axis=0) != 0
        if solving:
            pos = scan_start
            remaining = valid_cols
            path = zeros_i - 1
            shortest = zeros_f + float("inf")
            seen_rows = zeros_i
            seen_cols = zeros_i
            min_val = tl.sum(zeros_f, axis=0)
            row = cur_row + tl.sum(zeros_i, axis=0)
            sink = row * 0 - 1
            while sink < 0:
                seen_rows = tl.where(offs == row, 1, seen_rows)
                row_cost = tl.load(cost_ptr + (sample * size + row) * size + offs, mask=inside, other=0.0)
                u_row = tl.sum(tl.where(offs == row, u, 0.0), axis=0)
                reduced = (min_val + row_cost) - u_row - v
                open_cols = col_valid & (seen_cols == 0)
                better = open_cols & (reduced < shortest)
                path = tl.where(better, row, path)
                shortest = tl.where(better, reduced, shortest)
                # Lowest cost; among equals the last free column in scan order, else the first.
                scanned = tl.where(open_cols, shortest, float("inf"))
                lowest = tl.min(scanned, axis=0)
                at_lowest = open_cols & (scanned == lowest)
                last_free = tl.max(tl.where(at_lowest & (row4col < 0), pos, -1), axis=0)
                first = tl.min(tl.where(at_lowest, pos, BLOCK), axis=0)
                chosen = tl.where(last_free >= 0, last_free, first)
                column = tl.max(tl.where(open_cols & (pos == chosen), offs, -1), axis=0)
                min_val = lowest
                owner = tl.max(tl.where(offs == column, row4col, -2), axis=0)
                # Swap-remove: the column last in the scan list takes the chosen position.
                pos = tl.where(open_cols & (pos == remaining - 1), chosen, pos)
                remaining = remaining - 1
                seen_cols = tl.where(offs == column, 1, seen_cols)
                sink = tl.where(owner < 0, column, -1)
                row = tl.where(owner < 0, row, owner)
            # Dual update, in scipy's order of floating-point operations.
            own = col4row[:, None] == offs[None, :]
            shortest_own = tl.sum(tl.where(own, shortest[None, :], 0.0), axis=1)
            u = tl.where((seen_rows != 0) & (offs != cur_row), u + (min_val - shortest_own), u)
            u = tl.where(offs == cur_row, u + min_val, u)
            v = tl.where(seen_cols != 0, v - (min_val - shortest), v)
            # Augment along the path back from the sink to cur_row.
            column = sink
            done = sink < 0
            while done == 0:
                back = tl.max(tl.where(offs == column, path, -2), axis=0)
                row4col = tl.where(offs == column, back, row4col)
                previous = tl.max(tl.where(offs == back, col4row, -2), axis=0)
                col4row = tl.where(offs == back, column, col4row)
                column = previous
                done = back == cur_row
    tl.store(col4row_ptr + sample * size + offs, col4row, mask=inside)


_compiled = None


def available() -> bool:
    return triton is not None


def solve(cost: Tensor, row_valid: Tensor, col_valid: Tensor, rows_needed: int) -> Tensor:
    """``assignment._solve`` in one launch: (B, N, N) float64 frames, (B, N) masks → (B, N)
    col4row (long). Under ``TRITON_INTERPRET=1`` (set before triton is imported) it runs in
    Triton's interpreter on host tensors, as the CPU tests do."""
    global _compiled
    if _compiled is None:
        _compiled = triton.jit(_lsap_kernel)
    batch, size, _ = cost.shape
    out = torch.empty(batch, size, dtype=torch.int32, device=cost.device)
    block = max(16, triton.next_power_of_2(size))
    _compiled[(batch,)](cost.contiguous(), row_valid.to(torch.int32).contiguous(),
                        col_valid.to(torch.int32).contiguous(), out, size, rows_needed, BLOCK=block)
    return out.long()
