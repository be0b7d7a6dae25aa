"""Loading backbone weights from local files (never from a hub)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (loaded with ``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path, in_chans: int) -> None:
    """Load ImageNet/DeiT/kgvlp weights into a timm backbone, adapting the stem to ``in_chans``
    (timm's rule: RGB kernels summed for one channel) and dropping classifier heads.
    Any other missing or unexpected key is an error that names the keys."""
    from timm.models import adapt_input_conv
    state = read_state_dict(path)
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = backbone.state_dict()
    for key, value in list(state.items()):
        if key in own and value.ndim == 4 and own[key].ndim == 4 and value.shape[1] != own[key].shape[1]:
            state[key] = adapt_input_conv(in_chans, value)
    head_keys = [k for k in state if k not in own and k.split(".")[0] in ("head", "fc", "classifier")]
    for key in head_keys:
        del state[key]
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"weights {path} do not fit {type(backbone).__name__}: "
                       f"missing {missing[:10]}, unexpected {unexpected[:10]}")
