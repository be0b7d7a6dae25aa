"""tools/gpu_bench.sh refuses to measure without a GPU, early and saying what to run instead
(its --check mode loads every part's configs; --cpu-smoke runs them at tiny sizes)."""
from __future__ import annotations

import subprocess

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_the_script_stops_before_any_work_and_names_the_cpu_modes(tmp_path):
    out = tmp_path / "figures"

    done = subprocess.run(["bash", "tools/gpu_bench.sh", str(out)], capture_output=True, text=True, timeout=120)

    assert done.returncode == 3
    assert "no CUDA device is visible" in done.stderr and "--cpu-smoke" in done.stderr
    assert not out.exists()


def test_the_script_wants_exactly_one_output_folder():
    done = subprocess.run(["bash", "tools/gpu_bench.sh"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 2 and "usage" in done.stderr
