"""Every key-name conversion between a kgvlp ``VLPModel`` and the formats it exports.

One ``Entry`` says where one exported tensor comes from: the kgvlp key and the operation
(``copy``; ``chunk:i/n`` = the i-th of n equal slices along dim 0, how timm's fused qkv
becomes transformers' query/key/value; ``grey_to_rgb`` = a 1-channel stem kernel spread
equally over R, G, B). ``to_format`` applies a map, ``from_format`` inverts it; both fail
naming every missing or unexpected key. An export folder records the map it was written
with (``kgvlp_export.json``), and ``diff_maps`` names the entries a later kgvlp changed.

Exported key names are the *in-memory* module names of the target library (what
``model.state_dict()`` returns there); ``save_pretrained`` may rename them on disk and
``from_pretrained`` renames them back.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

NAME_MAP_VERSION = 1

IMAGE = "image_encoder."
BACKBONE = "image_encoder.backbone."
TEXT = "text_encoder.bert."
PROJECTIONS = "projections."
IMAGE_POOL = "image_encoder.pool."        # ResNet attention pool (PRIOR): not part of timm
EXPORTED_PREFIXES = ("image_encoder.", "text_encoder.", "projections.")


@dataclass(frozen=True)
class Entry:
    exported: str
    source: str
    op: str = "copy"

    def as_list(self) -> list[str]:
        return [self.exported, self.source, self.op]


class NameMapError(KeyError):
    """A state dict does not fit a name map; the message names the keys."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


# --- the maps ---------------------------------------------------------------------------

def timm_map(keys: list[str]) -> list[Entry]:
    """kgvlp image backbone → timm model keys (the backbone *is* a timm model)."""
    return [Entry(k.removeprefix(BACKBONE), k) for k in keys if k.startswith(BACKBONE)]


def hf_text_map(keys: list[str]) -> list[Entry]:
    """kgvlp text encoder → transformers model keys (the encoder wraps a transformers model)."""
    return [Entry(k.removeprefix(TEXT), k) for k in keys if k.startswith(TEXT)]


_VIT_RENAMES = [  # timm VisionTransformer → transformers ViTModel (in-memory names)
    (r"cls_token", "embeddings.cls_token"),
    (r"pos_embed", "embeddings.position_embeddings"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"layers.\1.layernorm_before.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"layers.\1.layernorm_after.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layers.\1.attention.o_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"layers.\1.mlp.fc1.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"layers.\1.mlp.fc2.\2"),
    (r"norm\.(weight|bias)", r"layernorm.\1"),
]
_VIT_QKV = re.compile(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)")


def hf_vit_map(keys: list[str]) -> list[Entry]:
    """kgvlp ViT backbone (timm) → transformers ``ViTModel``; qkv is split in three."""
    entries = []
    for key in keys:
        if not key.startswith(BACKBONE):
            continue
        name = key.removeprefix(BACKBONE)
        qkv = _VIT_QKV.fullmatch(name)
        if qkv:
            block, kind = qkv.groups()
            entries += [Entry(f"layers.{block}.attention.{part}_proj.{kind}", key, f"chunk:{i}/3")
                        for i, part in enumerate(("q", "k", "v"))]
            continue
        entries.append(Entry(_renamed(name, _VIT_RENAMES, key, "transformers ViTModel"), key))
    return entries


_HEAD_RENAMES = [  # GlobalProjection's Sequential indices → documented names
    (r"projections\.(image|text)\.net\.0\.(\w+)", r"\1.fc1.\2"),
    (r"projections\.(image|text)\.net\.1\.(\w+)", r"\1.bn1.\2"),
    (r"projections\.(image|text)\.net\.3\.(\w+)", r"\1.fc2.\2"),
    (r"projections\.(image|text)\.net\.4\.(\w+)", r"\1.bn2.\2"),
    (r"projections\.text\.proj\.weight", r"text.proj.weight"),   # model.text.head: linear
    (r"image_encoder\.pool\.(.+)", r"image.pool.\1"),
]


def heads_map(keys: list[str]) -> list[Entry]:
    """Projection heads (and a ResNet attention pool) → ``heads.safetensors`` names."""
    entries = []
    for key in keys:
        if not (key.startswith(PROJECTIONS) or key.startswith(IMAGE_POOL)):
            continue
        entries.append(Entry(_renamed(key, _HEAD_RENAMES, key, "heads.safetensors"), key))
    return entries


def open_clip_map(keys: list[str], stem_key: str) -> list[Entry]:
    """Towers of an open_clip ``CustomTextCLIP`` (timm vision trunk, HF text transformer).

    The projection heads, the text pooler and ``logit_scale`` are *derived* tensors (see
    kgvlp/export/heads.py), not renamed ones, so they are not in this map.
    """
    entries = [Entry(f"visual.trunk.{e.exported}", e.source,
                     "grey_to_rgb" if e.source == stem_key else "copy") for e in timm_map(keys)]
    entries += [Entry(f"text.transformer.{e.exported}", e.source) for e in hf_text_map(keys)]
    return entries


# --- applying them ----------------------------------------------------------------------

def _check(have: set[str], want: set[str], where: str) -> None:
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        raise NameMapError(f"{where}: missing keys {missing[:12]}{' …' if len(missing) > 12 else ''}, "
                           f"unexpected keys {unexpected[:12]}{' …' if len(unexpected) > 12 else ''}")


def to_format(state: dict[str, Tensor], entries: list[Entry]) -> dict[str, Tensor]:
    """kgvlp tensors → exported tensors (contiguous, so safetensors can write them)."""
    missing = sorted({e.source for e in entries} - set(state))
    if missing:
        raise NameMapError(f"kgvlp state for export lacks keys the name map needs: {missing[:12]}")
    out = {}
    for entry in entries:
        value = state[entry.source]
        if entry.op.startswith("chunk:"):
            index, count = map(int, entry.op.removeprefix("chunk:").split("/"))
            value = value.chunk(count, dim=0)[index]
        elif entry.op == "grey_to_rgb":
            value = (value / 3).expand(-1, 3, *value.shape[2:]) if value.shape[1] == 1 else value
        elif entry.op != "copy":
            raise NameMapError(f"unknown name-map operation {entry.op!r} for {entry.exported!r}")
        out[entry.exported] = value.detach().clone().contiguous()
    return out


def from_format(tensors: dict[str, Tensor], entries: list[Entry], where: str,
                skip_ops: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Exported tensors → kgvlp tensors; every exported key must be in the map and back.

    ``skip_ops``: operations that cannot be inverted bit-exactly (``grey_to_rgb``); their
    kgvlp tensors must come from elsewhere (the open_clip folder's kgvlp_exact.safetensors).
    """
    _check(set(tensors), {e.exported for e in entries}, where)
    chunks: dict[str, dict[int, Tensor]] = {}
    out = {}
    for entry in entries:
        if entry.op in skip_ops:
            continue
        value = tensors[entry.exported]
        if entry.op.startswith("chunk:"):
            index, count = map(int, entry.op.removeprefix("chunk:").split("/"))
            chunks.setdefault(entry.source, {})[index] = value
            if len(chunks[entry.source]) == count:
                out[entry.source] = torch.cat([chunks[entry.source][i] for i in range(count)], dim=0)
        elif entry.op == "copy":
            out[entry.source] = value
        else:
            raise NameMapError(f"cannot invert name-map operation {entry.op!r} for {entry.exported!r}")
    return out


def serialise(entries: list[Entry]) -> list[list[str]]:
    return [e.as_list() for e in entries]


def diff_maps(recorded: list[list[str]], current: list[Entry]) -> list[str]:
    """Human-readable differences between a folder's recorded map and this kgvlp's."""
    old = {tuple(r) for r in recorded}
    new = {tuple(asdict(e).values()) for e in current}
    lines = [f"folder has {e[0]!r} ← {e[1]!r} ({e[2]}), this kgvlp does not" for e in sorted(old - new)]
    lines += [f"this kgvlp maps {e[0]!r} ← {e[1]!r} ({e[2]}), the folder does not" for e in sorted(new - old)]
    return lines


def _renamed(name: str, renames: list[tuple[str, str]], key: str, target: str) -> str:
    """``name`` through the first (pattern, replacement) that matches it whole."""
    for pattern, replacement in renames:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise NameMapError(f"no {target} name for kgvlp key {key!r}")
