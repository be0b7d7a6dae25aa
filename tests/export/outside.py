"""Run in a fresh interpreter that never imports kgvlp: load an export with the target
library's own API and compare with kgvlp's reference outputs (a safetensors file).

    python outside.py FORMAT EXPORT_DIR REFERENCE.safetensors

Exits non-zero with the largest difference when anything differs by more than 1e-5.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

TOL = 1e-5


def close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    diff = (got - want).abs().max().item()
    print(f"{name}: max |diff| = {diff:.3g}")
    assert diff <= TOL, f"{name} differs from kgvlp by {diff}"


def check_open_clip(folder: str, ref: dict) -> None:
    import open_clip
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{folder}/open_clip")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}/open_clip")
    model.eval()
    ids = tokenizer(PROMPTS)
    assert torch.equal(ids, ref["ids"]), "open_clip's tokenizer gives other ids than kgvlp's"
    with torch.no_grad():
        image = model.encode_image(ref["images"].expand(-1, 3, -1, -1), normalize=True)
        text = model.encode_text(ids, normalize=True)
    dims = ref["image_embed"].shape[1]
    close("open_clip image embed", image[:, :dims], ref["image_embed"])
    close("open_clip text embed", text[:, :dims], ref["text_embed"])
    assert image[:, dims:].abs().max() == 0 and text[:, dims:].abs().max() == 0
    predicted = (image @ text.T).argmax(dim=1)
    assert torch.equal(predicted, ref["zero_shot"]), f"zero-shot {predicted} vs kgvlp {ref['zero_shot']}"


def check_hf(folder: str, ref: dict) -> None:
    from transformers import AutoModel
    from safetensors.torch import load_file as read
    text = AutoModel.from_pretrained(f"{folder}/hf/text", add_pooling_layer=False).eval()
    heads = read(f"{folder}/hf/heads.safetensors")
    with torch.no_grad():
        cls = text(input_ids=ref["ids"], attention_mask=(ref["ids"] != 0).long()).last_hidden_state[:, 0]
    close("transformers text [CLS]", cls, ref["text_global"])
    close("transformers text embed", project(heads, "text", cls), ref["text_embed"])
    if "hf_image_global" in ref:
        image = AutoModel.from_pretrained(f"{folder}/hf/image", add_pooling_layer=False).eval()
        with torch.no_grad():
            out = image(pixel_values=ref["images"]).last_hidden_state
        close("transformers image [CLS]", out[:, 0], ref["image_global"])
        close("transformers image tokens", out[:, 1:], ref["image_tokens"])
        close("transformers image embed", project(heads, "image", out[:, 0]), ref["image_embed"])


def project(heads: dict, tower: str, x: torch.Tensor) -> torch.Tensor:
    """The documented formula of hf/heads.safetensors (docs/export.md)."""
    def bn(z, name, eps=1e-5):
        z = (z - heads[f"{tower}.{name}.running_mean"]) / torch.sqrt(heads[f"{tower}.{name}.running_var"] + eps)
        if f"{tower}.{name}.weight" in heads:
            z = z * heads[f"{tower}.{name}.weight"] + heads[f"{tower}.{name}.bias"]
        return z
    z = F.linear(x, heads[f"{tower}.fc1.weight"], heads[f"{tower}.fc1.bias"])
    z = F.linear(torch.relu(bn(z, "bn1")), heads[f"{tower}.fc2.weight"], heads[f"{tower}.fc2.bias"])
    return F.normalize(bn(z, "bn2"), dim=-1)


def check_timm(folder: str, ref: dict) -> None:
    import json
    import timm
    model = timm.create_model(f"local-dir:{folder}/timm", pretrained=True).eval()
    config = json.load(open(f"{folder}/timm/config.json"))
    overlay = timm.create_model(config["architecture"], pretrained=True, num_classes=0,
                                pretrained_cfg_overlay=dict(file=f"{folder}/timm/model.safetensors", num_classes=0),
                                **config["model_args"]).eval()
    with torch.no_grad():
        for name, net in (("local-dir", model), ("pretrained_cfg_overlay", overlay)):
            close(f"timm ({name}) pooled features", net(ref["images"]), ref["image_global"])
            if "image_tokens" in ref:
                close(f"timm ({name}) patch tokens", net.forward_features(ref["images"])[:, 1:], ref["image_tokens"])


PROMPTS = ["no pleural effusion", "mild cardiomegaly with small effusions", "the lungs are clear",
           "right lower lobe pneumonia"]

if __name__ == "__main__":
    fmt, folder, reference = sys.argv[1:4]
    checks = {"open_clip": check_open_clip, "hf": check_hf, "timm": check_timm}
    checks[fmt](folder, load_file(reference))
    assert not any(m == "kgvlp" or m.startswith("kgvlp.") for m in sys.modules), "kgvlp was imported"
    print("ok")
