"""Writers and readers of the three export forms (open_clip, hf, timm).

Folder layout (``kgvlp export RUN --out DIR``)::

    DIR/README.md            model card              DIR/kgvlp_export.json  manifest + name maps
    DIR/config.yaml          resolved training config
    DIR/open_clip/           open_clip_config.json, open_clip_model.safetensors, tokenizer,
                             config.json (text tower), vision/config.json (timm tower, when
                             needed), kgvlp_exact.safetensors (what kgvlp.load needs back)
    DIR/hf/text/             transformers text encoder + tokenizer (save_pretrained)
    DIR/hf/image/            transformers ViTModel (ViT runs only)
    DIR/hf/heads.safetensors projection heads, raw (Linear + BatchNorm statistics)
    DIR/timm/                config.json + model.safetensors (timm local-dir form)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from kgvlp.export import heads as head_math
from kgvlp.export import names
from kgvlp.models.image import CNN_ARCHS, VIT_ARCHS
from kgvlp.modules.heads import LinearProjection
from kgvlp.models.weights import from_pretrained, read_state_dict

FORMATS = ("open_clip", "hf", "timm")
MEAN = STD = 0.5
VIT_TIMM_BASE = "vit_tiny_patch16_224"   # registered timm arch whose args vit_test overrides


class ExportError(ValueError):
    """An export cannot be written or read; the message says why and what is possible."""


def _state(model) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _is_vit(image_cfg) -> bool:
    return image_cfg.name in VIT_ARCHS


def stem_key(image_cfg) -> str:
    return names.BACKBONE + ("patch_embed.proj.weight" if _is_vit(image_cfg) else "conv1.weight")


def impossible_formats(model, image_cfg) -> dict[str, str]:
    """format → why this model cannot be written in it (absent = possible)."""
    why = {}
    has_heads = hasattr(model, "projections")
    if not has_heads:
        why["open_clip"] = ("the run has no shared image-text projection (no enabled objective "
                            "requires image_embed/text_embed), so there is no CLIP space to export")
    elif not _is_vit(image_cfg) and getattr(model.image_encoder, "pool", None) is not None:
        why["open_clip"] = ("model.image.resnet_global_pool=attention: kgvlp's attention pool "
                            "(timm AttentionPool2d, width-preserving, then the MLP head) has no "
                            "open_clip timm-tower equivalent")
    if has_heads and getattr(model.text_encoder, "mean_pool", False):
        why["open_clip"] = ("model.text.global_pool=mean: the open_clip text tower is written with "
                            "a [CLS] pooler (kgvlp/export/heads.py); mean pooling is not mapped")
    if has_heads and isinstance(model.projections.text, LinearProjection):
        why["open_clip"] = ("model.text.head=linear: the open_clip text tower is written with "
                            "MGCA's two-layer head (kgvlp/export/heads.py); a linear head is not mapped")
    if image_cfg.name not in VIT_ARCHS and image_cfg.name not in CNN_ARCHS:
        why["timm"] = f"image encoder {image_cfg.name!r} is not a timm model"
    return why


# --- timm -------------------------------------------------------------------------------

def timm_spec(image_cfg, in_chans: int) -> tuple[str, dict]:
    """(registered timm architecture, model_args) that rebuild kgvlp's backbone."""
    if _is_vit(image_cfg):
        arch = VIT_ARCHS[image_cfg.name]
        extra = dict(arch) if isinstance(arch, dict) else {}
        return (VIT_TIMM_BASE if isinstance(arch, dict) else arch,
                dict(extra, img_size=image_cfg.image_size, in_chans=in_chans, global_pool="token"))
    return CNN_ARCHS[image_cfg.name], dict(in_chans=in_chans, global_pool="avg")


def _timm_config(image_cfg, in_chans: int, width: int) -> dict:
    arch, args = timm_spec(image_cfg, in_chans)
    size = image_cfg.image_size
    return {"architecture": arch, "num_classes": 0, "num_features": width,
            "global_pool": args["global_pool"], "model_args": args,
            "pretrained_cfg": {"input_size": [in_chans, size, size], "interpolation": "bilinear",
                               "crop_pct": 1.0, "crop_mode": "center", "mean": [MEAN] * in_chans,
                               "std": [STD] * in_chans, "num_classes": 0,
                               "first_conv": stem_key(image_cfg).removeprefix(names.BACKBONE)[:-7],
                               "classifier": "head" if _is_vit(image_cfg) else "fc"}}


def write_timm(model, image_cfg, out: Path) -> list[names.Entry]:
    entries = names.timm_map(list(model.state_dict()))
    out.mkdir(parents=True, exist_ok=True)
    save_file(names.to_format(_state(model), entries), str(out / "model.safetensors"), metadata={"format": "pt"})
    config = _timm_config(image_cfg, image_cfg.in_chans, model.image_encoder.width)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return entries


# --- hf -----------------------------------------------------------------------------------

def _vit_hf_config(model, image_cfg):
    from transformers import ViTConfig
    vit = model.image_encoder.backbone
    block = vit.blocks[0]
    return ViTConfig(hidden_size=vit.embed_dim, num_hidden_layers=len(vit.blocks),
                     num_attention_heads=block.attn.num_heads,
                     intermediate_size=block.mlp.fc1.out_features, hidden_act="gelu",
                     layer_norm_eps=vit.norm.eps, image_size=image_cfg.image_size,
                     patch_size=vit.patch_embed.patch_size[0], num_channels=image_cfg.in_chans,
                     qkv_bias=block.attn.qkv.bias is not None, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)


def heads_tensors(model) -> tuple[list[names.Entry], dict[str, Tensor]]:
    entries = names.heads_map(list(model.state_dict()))
    return entries, names.to_format(_state(model), entries)


def bn_eps(model) -> float:
    return float(model.projections.image.net[1].eps)


HEADS_DOC = {
    "formula": "e = normalize(bn2(fc2(relu(bn1(fc1(x)))))), x = the encoder's [CLS] state (ViT: "
               "last_hidden_state[:, 0]; ResNet: mean-pooled last stage, or image.pool.* when present); "
               "bn(z) = (z - running_mean) / sqrt(running_var + batchnorm_eps) * weight + bias; "
               "bn2 has no weight/bias; with model.text.head=linear the text tower is "
               "e = normalize(text.proj.weight @ x)",
    "towers": ["image", "text"],
}


def write_hf(model, image_cfg, tokenizer, out: Path) -> dict[str, list[names.Entry]]:
    state, keys = _state(model), list(model.state_dict())
    maps = {"hf_text": names.hf_text_map(keys)}
    text_dir = out / "text"
    model.text_encoder.bert.save_pretrained(str(text_dir), state_dict=names.to_format(state, maps["hf_text"]),
                                            safe_serialization=True)
    tokenizer.save_pretrained(str(text_dir))
    if _is_vit(image_cfg):
        from transformers import ViTModel
        maps["hf_image"] = names.hf_vit_map(keys)
        vit = ViTModel(_vit_hf_config(model, image_cfg), add_pooling_layer=False)
        _load_strict(vit, names.to_format(state, maps["hf_image"]), "transformers ViTModel")
        vit.save_pretrained(str(out / "image"), safe_serialization=True)
    if hasattr(model, "projections") or getattr(model.image_encoder, "pool", None) is not None:
        maps["heads"], tensors = heads_tensors(model)
        # One metadata key only: safetensors writes metadata in hash order, so more keys
        # would make byte-identical re-exports impossible. The formula lives in heads.json.
        save_file(tensors, str(out / "heads.safetensors"), metadata={"format": "pt"})
        (out / "heads.json").write_text(json.dumps(HEADS_DOC | {
            "batchnorm_eps": bn_eps(model) if hasattr(model, "projections") else None}, indent=2) + "\n")
    return maps


def _load_strict(module, tensors: dict[str, Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise names.NameMapError(f"{what}: missing keys {missing[:12]}, unexpected keys {unexpected[:12]}")


# --- open_clip ----------------------------------------------------------------------------

def _last_norm(state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    layers = [int(k.split(".")[4]) for k in state if k.startswith(names.TEXT + "encoder.layer.")]
    prefix = f"{names.TEXT}encoder.layer.{max(layers)}.output.LayerNorm."
    return state[prefix + "weight"], state[prefix + "bias"]


def _ita_temperature(experiment) -> float:
    ita = experiment.config.objectives.get("ita") if experiment is not None else None
    return float(getattr(ita, "temperature", 0.07) or 0.07)


def write_open_clip(model, image_cfg, tokenizer, out: Path, experiment=None) -> dict:
    """open_clip_config.json + open_clip_model.safetensors (+ towers' configs, tokenizer)."""
    state, keys = _state(model), list(model.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    arch, args = timm_spec(image_cfg, in_chans=3)
    if _is_vit(image_cfg) or args != dict(in_chans=3, global_pool="avg"):
        vision_dir = out / "vision"
        vision_dir.mkdir(exist_ok=True)
        config = _timm_config(image_cfg, 3, model.image_encoder.width)
        (vision_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        timm_name = f"local-dir:{vision_dir.resolve()}"
    else:
        timm_name = arch
    model.text_encoder.bert.config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

    _, heads = heads_tensors(model)
    hidden, out_dim = heads["image.fc1.weight"].shape[0], heads["image.fc2.weight"].shape[0]
    width = model.text_encoder.width
    embed_dim = head_math.open_clip_embed_dim(hidden, out_dim, width)
    entries = names.open_clip_map(keys, stem_key(image_cfg))
    tensors = names.to_format(state, entries)
    eps = bn_eps(model)
    derived = {**head_math.open_clip_image_head(heads, eps, embed_dim),
               **head_math.open_clip_text_head(heads, eps, embed_dim, *_last_norm(state)),
               "logit_scale": torch.tensor(math.log(1.0 / _ita_temperature(experiment)))}
    tensors.update({k: v.float().contiguous() for k, v in derived.items()})
    save_file(tensors, str(out / "open_clip_model.safetensors"), metadata={"format": "pt"})
    exact_keys = [k for k in keys if k.startswith(names.PROJECTIONS) or k.startswith(names.IMAGE_POOL)]
    exact = {k: state[k].contiguous() for k in exact_keys + [stem_key(image_cfg)]}
    # tensors kgvlp.load needs bit-exactly and open_clip does not read: raw projection
    # heads and the 1-channel stem kernel (one metadata key: see write_hf)
    save_file(exact, str(out / "kgvlp_exact.safetensors"), metadata={"format": "pt"})
    size = image_cfg.image_size
    config = {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {"timm_model_name": timm_name, "timm_model_pretrained": False,
                           "timm_pool": args["global_pool"], "timm_proj": "mlp", "timm_proj_bias": True,
                           "image_size": size},
            "text_cfg": {"hf_model_name": str(out.resolve()), "hf_tokenizer_name": str(out.resolve()),
                         "hf_model_pretrained": False, "hf_proj_type": "mlp",
                         "hf_pooler_type": "cls_pooler", "context_length": int(model.dims.max_length)},
        },
        "preprocess_cfg": {"size": size, "mode": "RGB", "mean": [MEAN] * 3, "std": [STD] * 3,
                           "interpolation": "bilinear", "resize_mode": "longest", "fill_color": 0},
        "kgvlp": {"grey_to_rgb": "open_clip converts the grey radiograph to RGB (R = G = B); the "
                                 "stem kernel is kgvlp's 1-channel kernel divided by 3 on each channel",
                  "embedding_dims": out_dim,
                  "note": f"embeddings have {embed_dim} dimensions of which the first {out_dim} are "
                          "kgvlp's and the rest exactly 0 (docs/export.md, kgvlp/export/heads.py)"},
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"open_clip": entries, "embed_dim": embed_dim}


# --- reading back ---------------------------------------------------------------------------

def read_image(folder: Path, maps: dict, image_cfg) -> dict[str, Tensor]:
    if (folder / "timm" / "model.safetensors").is_file():
        return names.from_format(read_state_dict(folder / "timm" / "model.safetensors"),
                                 maps["timm"], f"{folder}/timm/model.safetensors")
    if (folder / "hf" / "image").is_dir():
        from transformers import ViTModel
        vit = from_pretrained(ViTModel, folder / "hf" / "image", "export folder", add_pooling_layer=False)
        return names.from_format(_state(vit), maps["hf_image"], f"{folder}/hf/image")
    if (folder / "open_clip").is_dir():
        tensors = read_state_dict(folder / "open_clip" / "open_clip_model.safetensors")
        trunk = [e for e in maps["open_clip"] if e.exported.startswith("visual.trunk.")]
        out = names.from_format({k: v for k, v in tensors.items() if k.startswith("visual.trunk.")}, trunk,
                                f"{folder}/open_clip/open_clip_model.safetensors", skip_ops=("grey_to_rgb",))
        exact = read_state_dict(folder / "open_clip" / "kgvlp_exact.safetensors")
        out[stem_key(image_cfg)] = exact[stem_key(image_cfg)]
        return out
    raise ExportError(f"{folder}: no image encoder in it (expected timm/, hf/image/ or open_clip/)")


def read_text(folder: Path, maps: dict) -> dict[str, Tensor]:
    if (folder / "hf" / "text").is_dir():
        from transformers import AutoModel
        bert = from_pretrained(AutoModel, folder / "hf" / "text", "export folder", add_pooling_layer=False)
        return names.from_format(_state(bert), maps["hf_text"], f"{folder}/hf/text")
    if (folder / "open_clip").is_dir():
        tensors = read_state_dict(folder / "open_clip" / "open_clip_model.safetensors")
        text = [e for e in maps["open_clip"] if e.exported.startswith("text.transformer.")]
        pooler = "text.transformer.pooler."   # derived (kgvlp/export/heads.py), not kgvlp's
        return names.from_format({k: v for k, v in tensors.items()
                                  if k.startswith("text.transformer.") and not k.startswith(pooler)},
                                 text, f"{folder}/open_clip/open_clip_model.safetensors")
    raise ExportError(f"{folder}: no text encoder in it (expected hf/text/ or open_clip/)")


def read_heads(folder: Path, maps: dict) -> dict[str, Tensor]:
    if (folder / "hf" / "heads.safetensors").is_file():
        return names.from_format(read_state_dict(folder / "hf" / "heads.safetensors"), maps["heads"],
                                 f"{folder}/hf/heads.safetensors")
    if (folder / "open_clip" / "kgvlp_exact.safetensors").is_file():
        exact = read_state_dict(folder / "open_clip" / "kgvlp_exact.safetensors")
        return {k: v for k, v in exact.items() if k.startswith(names.PROJECTIONS) or k.startswith(names.IMAGE_POOL)}
    return {}


def text_folder(folder: Path) -> Path:
    """A transformers folder (config.json + tokenizer) for the text encoder of an export."""
    for candidate in (folder / "hf" / "text", folder / "open_clip"):
        if (candidate / "config.json").is_file():
            return candidate
    raise ExportError(f"{folder}: no text encoder config (expected hf/text/ or open_clip/)")
