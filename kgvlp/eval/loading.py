"""The models an evaluation compares: the trained one and its two baselines.

``trained``: a VLPModel instance, a run folder (``RUN/config.yaml`` + ``RUN/final/
model.safetensors``) or a checkpoint file beside/under such a run. ``random``: the same
architecture with every weight freshly initialised (no image weights, untrained text
encoder). ``start``: the same architecture as the run was built before training — the
configured image weights file / ``init_from`` and the pretrained text encoder.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kgvlp.models.build import build_model, rebuild
from kgvlp.models.vlp import VLPModel


class CheckpointError(ValueError):
    """A checkpoint that cannot be evaluated (missing, or not the architecture it claims)."""


@dataclass
class Candidate:
    """One model in a comparison table."""
    name: str                 # trained | random | start
    model: VLPModel
    note: str = ""


def _describe(model_cfg) -> str:
    return (f"image encoder {model_cfg.image.name!r} at {model_cfg.image.image_size} px, "
            f"text encoder {model_cfg.text.path or 'MiniLM (default)'} "
            f"({model_cfg.text.num_layers or 'all'} layers)")


def _find_run(path: Path) -> tuple[Path, Path]:
    """(config.yaml, weights file) of a run folder or a checkpoint file inside one."""
    if path.is_dir():
        weights = path / "final" / "model.safetensors"
        config = path / "config.yaml"
    else:
        weights = path
        config = next((p / "config.yaml" for p in path.parents if (p / "config.yaml").is_file()),
                      path.parent / "config.yaml")
    for needed, what in ((config, "the run's resolved config"), (weights, "the model weights")):
        if not needed.is_file():
            raise CheckpointError(f"{path}: expected {what} at {needed}, which does not exist "
                                  f"(a run folder holds config.yaml and final/model.safetensors)")
    return config, weights


def _load_state(model: nn.Module, weights: Path, model_cfg) -> None:
    from kgvlp.models.weights import WeightsError, load_state_into, read_state_dict
    try:
        state = {k.removeprefix("module."): v for k, v in read_state_dict(weights).items()}
        load_state_into(model, state, weights, expected=f"the architecture its config describes: "
                                                        f"{_describe(model_cfg)}")
    except WeightsError as err:
        raise CheckpointError(str(err)) from None


def load_trained(source) -> tuple[VLPModel, object | None]:
    """The model to evaluate and its experiment config (None for a bare VLPModel)."""
    if isinstance(source, VLPModel):
        return source, None
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint")
    try:  # the engine's loader when it exists; any failure is reported with what was expected
        from kgvlp.engine.checkpoint import load_model
    except ImportError:
        load_model = None
    config_path, weights = _find_run(path)
    from kgvlp.config.loader import load_experiment
    experiment = load_experiment(config_path)
    if load_model is not None:
        try:
            model, loaded = load_model(path)
            return model, loaded.config
        except Exception as err:  # noqa: BLE001 — re-raised with the expected architecture
            raise CheckpointError(f"{path}: cannot load as {_describe(experiment.config.model)}: "
                                  f"{err}") from err
    cfg = experiment.config
    model = build_model(cfg)
    _load_state(model, weights, cfg.model)
    return model, cfg


def _rebuild(model: VLPModel, model_cfg, seed: int) -> VLPModel:
    """``model``'s architecture — its objectives (a staged run's too), services and widths —
    with ``model_cfg``'s encoder settings, freshly initialised under ``seed``."""
    torch.manual_seed(seed)
    return rebuild(model, model_cfg)


def baselines(model: VLPModel, seed: int = 0, which: tuple[str, ...] = ("random", "start")) -> list[Candidate]:
    """The baseline models for ``model``'s architecture (see the module docstring)."""
    out = []
    base_cfg = model.model_cfg
    if "random" in which:
        cfg = copy.deepcopy(base_cfg)
        cfg = dataclasses.replace(cfg, init_from=None,
                                  image=dataclasses.replace(cfg.image, weights=None),
                                  text=dataclasses.replace(cfg.text, pretrained=False))
        out.append(Candidate("random", _rebuild(model, cfg, seed), "all weights randomly initialised"))
    if "start" in which:
        start = _rebuild(model, base_cfg, seed)
        note = "text encoder pretrained"
        note += (f", image weights {base_cfg.image.weights}" if base_cfg.image.weights
                 else ", image encoder random (no image weights configured)")
        if base_cfg.init_from:
            _, weights = _find_run(Path(base_cfg.init_from))
            _load_state(start, weights, base_cfg)
            note = f"initialised from {base_cfg.init_from}"
        out.append(Candidate("start", start, note))
    return out


def candidates(source, with_baselines: bool = True, seed: int = 0) -> tuple[list[Candidate], object | None]:
    """[trained, random, start] (baselines optional) and the trained model's experiment config."""
    model, config = load_trained(source)
    out = [Candidate("trained", model, str(source) if not isinstance(source, VLPModel) else "given model")]
    if with_baselines:
        out += baselines(model, seed)
    return out, config
