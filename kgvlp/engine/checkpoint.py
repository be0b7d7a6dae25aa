"""Reading trained models back: ``load_model(RUN_DIR | checkpoint file)``."""
from __future__ import annotations

from pathlib import Path

import torch
from kgvlp.config import LoadedExperiment, load_experiment
from kgvlp.models.weights import load_state_into, read_state_dict


def find_weights(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / "final" / "model.safetensors"
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"{path}: expected a run folder with final/model.safetensors "
                                "(written when training finishes)")
    if path.is_file():
        return path
    raise FileNotFoundError(f"{path} does not exist")


def load_weights_into(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load kgvlp weights; any missing/unexpected key or shape mismatch fails naming it."""
    from kgvlp.export import is_export
    if is_export(path):  # an export folder (kgvlp export): encoders + heads, named checks
        from kgvlp.export import load_weights_into as load_export
        load_export(model, path)
        return
    weights = find_weights(path)
    load_state_into(model, read_state_dict(weights), weights, strict=strict)


def load_model(path: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """The trained VLPModel of a run folder (its config.yaml + final weights), in eval mode."""
    from kgvlp.models.build import build_model
    weights = find_weights(path)
    run_dir = weights.parent.parent if weights.parent.name == "final" else weights.parent
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: expected config.yaml beside the weights")
    experiment: LoadedExperiment = load_experiment(config_path, overrides)
    model = build_model(experiment.config)
    load_weights_into(model, weights)
    return model.eval(), experiment
