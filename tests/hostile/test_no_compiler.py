"""CPU training builds nothing: with a C++ compiler and ninja that always fail on PATH and an
empty torch extensions folder, a single process and two gloo ranks reach their steps and no
extension is built (DeepSpeed would JIT-compile its shared-memory all-reduce otherwise)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
COMPILERS = ("c++", "g++", "gcc", "cc", "clang", "clang++", "ninja")


@pytest.fixture
def failing_compilers(tmp_path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in COMPILERS:
        tool = folder / name
        tool.write_text(f"#!/bin/sh\necho '{name}: no compiler on this machine' >&2\nexit 1\n")
        tool.chmod(0o755)
    return folder


def test_cpu_training_reaches_its_steps_without_a_compiler(tmp_path, failing_compilers):
    extensions = tmp_path / "torch_extensions"
    extensions.mkdir()
    # A fresh launch: no rendezvous variables inherited from this pytest process, whose own
    # in-process training runs left MASTER_PORT set to a port its process group still holds.
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env = dict(inherited, PATH=f"{failing_compilers}{os.pathsep}{os.environ['PATH']}", CC="gcc", CXX="c++",
               TORCH_EXTENSIONS_DIR=str(extensions), DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="")

    done = subprocess.run([sys.executable, str(HERE / "no_compiler_train.py"), str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"single": [1, 2], "ranks": [1, 2]}
    assert list(extensions.iterdir()) == []
