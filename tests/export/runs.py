"""Tiny run folders for the export tests: config.yaml + final/model.safetensors, written
without the Trainer (a seeded VLPModel whose projection BatchNorms have seen a few batches,
so folding them is not the identity)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from kgvlp.config import load_experiment, save_resolved

TINY = ["model.image.image_size=64", "model.text.max_length=32", "model.text.num_layers=2",
        "model.text.dropout=0.0", "model.sync_batchnorm=false", "objectives.ita.weight=1",
        "data.num_workers=0", "trainer.max_steps=3"]


def make_run(run_dir: Path, image: str = "vit_test", extra: tuple[str, ...] = (), seed: int = 0) -> Path:
    from kgvlp.models.vlp import VLPModel
    from kgvlp.objectives import REGISTRY
    experiment = load_experiment(None, TINY + [f"model.image.name={image}", f"name=tiny-{image}", *extra])
    cfg = experiment.config
    torch.manual_seed(seed)
    model = VLPModel(cfg.model, cfg.objectives, REGISTRY)
    if hasattr(model, "projections"):
        model.train()
        with torch.no_grad():
            for _ in range(3):  # move the BatchNorm statistics away from (0, 1)
                model.projections.image(torch.randn(8, model.dims.image_width) * 2 + 0.3)
                model.projections.text(torch.randn(8, model.dims.text_width) * 2 - 0.2)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(experiment.tree, run_dir / "config.yaml")
    (run_dir / "final").mkdir(exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run_dir / "final" / "model.safetensors"), metadata={"step": "3"})
    (run_dir / "metrics.jsonl").write_text('{"step": 3, "loss/total": 1.0}\n')
    return run_dir
