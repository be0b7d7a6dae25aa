"""Tiny grids for the ablation tests: the demo experiment shrunk to a 2-block ViT at 64 px,
MiniLM cut to 2 layers with 32 tokens, 48 generated SynthCXR studies, 4 steps."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "experiments" / "demo.yaml"
DYING_WORKER = Path(__file__).with_name("dying_worker.py")

TINY = {
    "model.image.name": "vit_test", "model.image.image_size": 64, "model.text.max_length": 32,
    "model.text.num_layers": 2, "data.synth_n": 48, "data.synth_image_size": 64, "data.resize": 72,
    "data.batch_size": 8, "data.num_workers": 0, "objectives.cta.hidden_dim": 64,
    "objectives.cpa.num_prototypes": 8, "trainer.max_steps": 4, "trainer.checkpoint_every": 2,
    "trainer.log_every": 1, "trainer.lr": 1e-3,
}
TINY_EVAL = {"tasks": ["linear_probe"], "fractions": [0.5], "seeds": [0], "max_epochs": 3}


def write_grid(folder: Path, axes: dict, name: str = "tiny", overrides: dict | None = None, **extra) -> Path:
    """A grid file over the demo experiment with TINY overrides (+ ``overrides``) and ``axes``."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "cache"
    grid = {"name": name, "base": str(DEMO),
            "overrides": {**TINY, "data.cache_dir": str(cache), **(overrides or {})},
            "axes": axes, "eval": dict(TINY_EVAL), **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def dying_command() -> list[str]:
    """A worker that SIGKILLs itself after its step-2 checkpoint (first attempt of the run
    named by KGVLP_TEST_KILL_RUN only)."""
    return [sys.executable, str(DYING_WORKER)]
