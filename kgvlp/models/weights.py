"""The one reader of model weights from disk: never from a hub, never unpickling objects.

``read_state_dict`` reads a safetensors file or a torch state dict of tensors (the format
is told by the file's first bytes, not its name); ``torch_load_tensors`` is its torch half,
also used for DeepSpeed's checkpoint files; ``load_state_into`` loads a state dict into a
model, failing on any missing, unexpected or mis-shaped key; ``check_model_folder`` refuses
a transformers folder that asks for custom code. Every refusal is a WeightsError naming the
file and what was expected.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
from torch import nn

EXPECTED = ("expected a safetensors file or a torch state dict of tensors "
            "(a zip or legacy checkpoint saved by torch.save)")
TORCH_ZIP, PICKLE_PROTOCOL = b"PK\x03\x04", 0x80


class WeightsError(ValueError):
    """A weights file or model folder kgvlp refuses to read; the message names it."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``; a torch checkpoint's ``state_dict``/``model``/``module``
    entry is unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with open(path, "rb") as stream:
        head = stream.read(9)
    if _is_safetensors(head, path.stat().st_size):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{path}: a damaged safetensors file ({err}); {EXPECTED}") from None
    if not (head.startswith(TORCH_ZIP) or head[:1] == bytes([PICKLE_PROTOCOL])):
        named = " (named .safetensors, but its header is not one)" if path.suffix == ".safetensors" else ""
        raise WeightsError(f"{path}: not a weights file{named}: {EXPECTED}; it starts with {head[:8]!r}")
    state = torch_load_tensors(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors; {EXPECTED}")
    return state


def _is_safetensors(head: bytes, size: int) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    if len(head) < 9:
        return False
    header = int.from_bytes(head[:8], "little")
    return 0 < header <= size - 8 and head[8:9] == b"{"


def torch_load_tensors(path: str | Path, map_location="cpu"):
    """``torch.load(weights_only=True)``: tensors and plain containers only. A file that needs
    any other Python object (a pickle payload, a custom class) is refused naming the object;
    nothing from it is constructed."""
    try:
        with warnings.catch_warnings():   # "pickle protocol N" notes about foreign pickles
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 — UnpicklingError, a truncated zip, a bad header…
        raise WeightsError(f"{path}: refused: {_why_torch_refused(err)}; {EXPECTED}") from None


def _why_torch_refused(err: Exception) -> str:
    text = str(err)
    if "Weights only load failed" in text:
        named = re.search(r"GLOBAL (\S+)", text) or re.search(r"global[s]? ([\w.]+)", text)
        what = f" ({named.group(1)})" if named else ""
        return (f"it holds pickled Python objects{what}, not only tensors, and kgvlp never builds "
                "objects from a weights file")
    return f"not a readable torch checkpoint ({text.splitlines()[0] if text else type(err).__name__})"


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
                    strict: bool = True, expected: str = "") -> tuple[list[str], list[str]]:
    """Load ``state`` into ``model``: a shape mismatch, and (``strict``) any missing or
    unexpected key, is a WeightsError naming ``source`` (and ``expected``, the architecture
    it should fit). Returns (missing, unexpected)."""
    own = model.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if mismatched or (strict and (missing or unexpected)):
        fits = f" (expected {expected})" if expected else ""
        raise WeightsError(f"{source} does not fit this model{fits}: {len(missing)} missing keys {missing[:5]}, "
                           f"{len(unexpected)} unexpected keys {unexpected[:5]}, shape mismatches {mismatched[:5]}")
    model.load_state_dict(state, strict=False)
    return missing, unexpected


def check_model_folder(path: str | Path, key: str) -> Path:
    """A local transformers folder (``key`` names the option it came from). One whose
    config asks for custom code (``auto_map``) is refused: kgvlp never runs code shipped
    with a model (no ``trust_remote_code``)."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {path} is not a transformers model folder "
                                "(expected config.json, tokenizer and weights in it)")
    for name in ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightsError(f"{key}: {file} is not a JSON config ({err})") from None
        if isinstance(config, dict) and "auto_map" in config:
            raise WeightsError(f"{key}: {file} asks for custom model code (auto_map: "
                               f"{', '.join(map(str, config['auto_map']))}); kgvlp runs only the model "
                               "classes transformers ships, never code from a model folder")
    return path


def from_pretrained(loader, path: Path, key: str, **kwargs):
    """``loader.from_pretrained(path)`` for a checked folder, with no remote code; a refused
    or unreadable weights file is a WeightsError naming the folder."""
    check_model_folder(path, key)
    try:
        return loader.from_pretrained(str(path), trust_remote_code=False, **kwargs)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 — transformers wraps torch's refusals in several types
        if "Weights only load failed" in str(err):
            raise WeightsError(f"{key}: {path}: refused: {_why_torch_refused(err)}") from None
        raise WeightsError(f"{key}: {path}: cannot load it as a transformers model: "
                           f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


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
    load_state_into(backbone, state, f"model.image.weights {path}", expected=type(backbone).__name__)
