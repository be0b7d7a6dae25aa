"""kgvlp's side of the MGCA parity fixtures (tools/parity_mgca.py writes them from the
official code): the fixture's token-level encoder outputs go into a real ``VLPModel`` in
float64, through kgvlp's own tokenisation (Collator), encode (word merge, shared heads,
services) and objectives.

The encoders are the only stand-ins, and only for their backbones:
- text: ``Given text`` returns what ``TextEncoder.forward`` returns ([CLS] state, token
  states, last layer's [CLS] attention averaged over heads) from the given states and
  attention map;
- ViT: ``Given ViT`` likewise (final-norm [CLS] and patches, CLS→patch attention of the
  last block averaged over heads);
- ResNet: kgvlp's own ``ResNetEncoder`` whose stem and layers 1–2 pass through and whose
  layers 3–4 return the given maps, so its pooling, token layout and uniform weights run.
The fixtures' tiny widths go in by size only: the shared heads' hidden width and the
embedding width (kgvlp fixes them at MGCA's 2048 and 128).

Run as a script to print how far each of kgvlp's own choices moves the terms from the
official numbers (the figures in docs/mgca.md): ``python tests/mgca_parity/harness.py``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor, nn

import kgvlp.models.vlp as vlp
from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.text import split_sentences
from kgvlp.models.context import StepContext
from kgvlp.models.image import ImageOutput, ResNetEncoder
from kgvlp.models.text import TextOutput, load_tokenizer
from kgvlp.modules.heads import SharedProjections
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.cpa import CPAConfig
from kgvlp.objectives.cta import CTAConfig
from kgvlp.objectives.ita import ITAConfig

HERE = Path(__file__).parent
AFTER_FREEZE = StepContext(step=10, epoch=1.0)
TERMS = {"ita": "ita", "word": "cta", "patch": "cta", "cpa": "cpa"}   # term → objective


def manifest() -> dict:
    return json.loads((HERE / "manifest.json").read_text())


def load_case(name: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file
    return load_file(str(HERE / f"{name}.safetensors"))


class GivenText(nn.Module):
    """Stands in for ``TextEncoder``: returns the fixture's outputs as TextOutput."""

    def __init__(self, width: int):
        super().__init__()
        self.width, self.sentence_slots, self.output = width, 32, None

    def give(self, states: Tensor, attention: Tensor) -> None:
        self.output = TextOutput(global_vector=states[:, 0], tokens=states,
                                 cls_attention=attention[:, :, 0].mean(dim=1))

    def forward(self, input_ids, attention_mask, sentence_index=None) -> TextOutput:
        return self.output


class GivenViT(nn.Module):
    """Stands in for ``ViTEncoder``: final-norm tokens and the last block's attention given."""
    family = "vit"

    def __init__(self, width: int):
        super().__init__()
        self.width = self.token_width = width
        self.output = None

    def give(self, tokens: Tensor, attention: Tensor) -> None:
        self.output = ImageOutput(global_vector=tokens[:, 0], tokens=tokens[:, 1:],
                                  patch_weights=attention[:, :, 0, 1:].mean(dim=1))

    def forward(self, images) -> ImageOutput:
        return self.output


class Given(nn.Module):
    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, x):
        return self.value


def given_resnet(layer3: int, layer4: int) -> ResNetEncoder:
    """kgvlp's ResNetEncoder (MGCA layout: avg-pooled layer4, layer3 tokens) on given maps."""
    encoder = ResNetEncoder(ImageEncoderConfig(name="resnet_test", image_size=32, in_chans=1))
    net = encoder.backbone
    for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2"):
        setattr(net, name, nn.Identity())
    net.layer3, net.layer4 = Given(), Given()
    encoder.width, encoder.token_width = layer4, layer3
    return encoder


def give_resnet(encoder: ResNetEncoder, layer3: Tensor, layer4: Tensor) -> None:
    encoder.backbone.layer3.value, encoder.backbone.layer4.value = layer3, layer4


def quirk_objectives(meta: dict, quirks: bool = True) -> dict:
    widths = meta["widths"]
    return {"ita": ITAConfig(official_quirks=quirks, gather=False),
            "cta": CTAConfig(official_quirks=quirks, hidden_dim=widths["hidden"]),
            "cpa": CPAConfig(official_quirks=quirks, num_prototypes=widths["prototypes"], gather=False)}


def build(branch: str, fixture: dict[str, Tensor], meta: dict, objectives: dict):
    """A float64 VLPModel around the given encoders, with the fixture's head weights."""
    widths = meta["widths"]
    text = GivenText(widths["text"])
    image = GivenViT(widths["vit"]) if branch == "vit" else given_resnet(widths["resnet_layer3"],
                                                                         widths["resnet_layer4"])
    leaves = {"text_hidden": fixture["input/text_hidden"].clone().requires_grad_()}
    text.give(leaves["text_hidden"], fixture["input/text_attention"])
    if branch == "vit":
        leaves["vit_tokens"] = fixture["input/vit_tokens"].clone().requires_grad_()
        image.give(leaves["vit_tokens"], fixture["input/vit_attention"])
    else:
        for key in ("resnet_layer3", "resnet_layer4"):
            leaves[key] = fixture[f"input/{key}"].clone().requires_grad_()
        give_resnet(image, leaves["resnet_layer3"], leaves["resnet_layer4"])

    def dims(*args):
        return dataclasses.replace(probe(*args), embed_dim=widths["embed"])
    probe = vlp.probe_dims
    cfg = ModelConfig(image=ImageEncoderConfig(name="vit_test" if branch == "vit" else "resnet_test"),
                      text=TextEncoderConfig(max_length=meta["max_length"]), sync_batchnorm=False)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(vlp, "build_image_encoder", lambda _: image))
        stack.enter_context(mock.patch.object(vlp, "TextEncoder", lambda _: text))
        stack.enter_context(mock.patch.object(vlp, "probe_dims", dims))
        stack.enter_context(mock.patch.object(vlp, "SharedProjections",
                                              functools.partial(SharedProjections, hidden_dim=widths["hidden"])))
        model = vlp.VLPModel(cfg, objectives, REGISTRY)
    model.double().train()
    load_official_weights(model, fixture)
    return model, leaves


def parameter_map(model) -> dict[str, nn.Parameter]:
    """Fixture name (the official module path) → kgvlp parameter."""
    out = {}
    heads = {"image_global": model.projections.image.net, "text_global": model.projections.text.net}
    for official, net in heads.items():
        for index in (0, 1, 3):
            for kind in ("weight", "bias"):
                out[f"{official}.head.{index}.{kind}"] = getattr(net[index], kind)
    cta = model.objectives.objectives["cta"]
    for official, head in (("image_local", cta.image_head), ("text_local", cta.word_head)):
        for index, layer in ((0, head.fc1), (1, head.bn1), (3, head.fc2)):
            for kind in ("weight", "bias"):
                out[f"{official}.head.{index}.{kind}"] = getattr(layer, kind)
    out["prototypes.weight"] = model.objectives.objectives["cpa"].prototypes.weight
    return out


def load_official_weights(model, fixture: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, param in parameter_map(model).items():
            value = fixture[f"param/{name}"]
            param.copy_(value.reshape(param.shape))      # Conv1d (out, in, 1) → Linear (out, in)
    # Raw (non-unit) prototype rows: kgvlp renormalises once per optimizer step.
    model.objectives.objectives["cpa"].after_step(AFTER_FREEZE)


def make_batch(meta: dict, fixture: dict[str, Tensor]):
    tokenizer = load_tokenizer(TextEncoderConfig())
    size = fixture["input/input_ids"].shape[0]
    reports = [split_sentences(meta["reports"][i % len(meta["reports"])]) for i in range(size)]
    samples = [Sample(image=torch.zeros(1, 2, 2, dtype=torch.float64), sentences=s, index=i)
               for i, s in enumerate(reports)]
    return Collator(tokenizer, meta["max_length"])(samples)


def run(case: dict, objectives_quirks: bool = True, fixture: dict | None = None, tweak=None):
    """kgvlp on one fixture case: (terms, gradients {term: {name: grad}}, features, model,
    batch). ``tweak(model)``, if given, runs after the build (measurements only)."""
    meta = manifest()
    fixture = load_case(case["name"]) if fixture is None else fixture
    model, leaves = build(case["branch"], fixture, meta, quirk_objectives(meta, objectives_quirks))
    if tweak is not None:
        tweak(model)
    batch = make_batch(meta, fixture)
    features = model.encode(batch)
    outputs = {name: model.objectives.objectives[name](features, AFTER_FREEZE) for name in ("ita", "cta", "cpa")}
    terms = {term: outputs[objective].terms[term] for term, objective in TERMS.items()}
    wrt = {**leaves, **parameter_map(model)}
    grads = {}
    for term, value in terms.items():
        found = torch.autograd.grad(value, list(wrt.values()), retain_graph=True, allow_unused=True)
        grads[term] = {name: g for name, g in zip(wrt, found) if g is not None}
    return terms, grads, features, model, batch


def worst(a: Tensor, b: Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ---------------------------------------------------------------------------------------
# measurements for docs/mgca.md: each official behaviour switched back to kgvlp's alone


def unshifted_slots(tokens, cls_attention, word_index, attention_mask):
    """The official slots, but each word weighted by the attention to its own pieces."""
    from kgvlp.models.text import merge_words
    from kgvlp.modules.mgca_words import WordSlots, official_word_index
    index = official_word_index(word_index, attention_mask)
    slots = index.shape[1] - 1
    return WordSlots(tokens=merge_words(tokens, index, slots), weights=merge_words(cls_attention, index, slots),
                     mask=merge_words((index >= 0).to(tokens.dtype), index, slots) > 0)


def kgvlp_slots(tokens, cls_attention, word_index, attention_mask):
    """kgvlp's own words (W = L − 2, no [SEP] slot, no shift) where CTA reads the slots."""
    from kgvlp.models.text import merge_words
    from kgvlp.modules.mgca_words import WordSlots
    slots = word_index.shape[1] - 2
    return WordSlots(tokens=merge_words(tokens, word_index, slots), weights=merge_words(cls_attention, word_index, slots),
                     mask=merge_words((word_index >= 0).to(tokens.dtype), word_index, slots) > 0)


def as_vit(model) -> None:
    model.objectives.objectives["cta"].dims.image_family = "vit"


def cpa_codes_unrounded(model) -> None:
    from kgvlp.modules.sinkhorn import batch_codes
    cfg = model.objectives.objectives["cpa"].cfg
    model.objectives.objectives["cpa"]._codes = lambda scores: batch_codes(
        scores, cfg.epsilon, cfg.sinkhorn_iterations, gather=False, stable=False)


def per_rank_statistics(batch: int = 144, ranks: int = 2, seed: int = 0) -> dict[str, float]:
    """MGCA's global heads at its real sizes (768 → 2048 → 128) and batch (72 per GPU × 2):
    BatchNorm per rank's rows (the official code) vs statistics over all ranks
    (model.sync_batchnorm), on correlated random image/report vectors. Returns the largest
    change of an embedding entry and the relative change of a rank's (official, summed) ITA."""
    import torch.nn.functional as F
    torch.manual_seed(seed)
    heads = SharedProjections(768, 768, sync_bn=False).double().train()
    image = torch.randn(batch, 768, dtype=torch.float64)
    text = image + torch.randn(batch, 768, dtype=torch.float64)
    with torch.no_grad():
        synced_i, synced_t = heads.image(image), heads.text(text)
        embed_gap, ita_gap = 0.0, 0.0
        for part in torch.arange(batch).chunk(ranks):
            own_i, own_t = heads.image(image[part]), heads.text(text[part])
            embed_gap = max(embed_gap, worst(own_i, synced_i[part]), worst(own_t, synced_t[part]))

            def ita(i, t):
                logits, target = i @ t.t() / 0.07, torch.arange(len(part))
                return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
            official = ita(own_i, own_t)
            ita_gap = max(ita_gap, abs(official - ita(synced_i[part], synced_t[part])).item() / official.item())
    return {"embedding": embed_gap, "ita": ita_gap}


def measure() -> None:
    """Per official behaviour: |Δ| of each term when only it is switched back to kgvlp's."""
    from kgvlp.modules import mgca_words
    meta = manifest()
    variants = {"defaults (official_quirks: false)": dict(objectives_quirks=False),
                "quirks, kgvlp's 110-slot words": dict(words=kgvlp_slots),
                "quirks, official slots without the shift": dict(words=unshifted_slots),
                "quirks, ResNet context not re-normalised": dict(tweak=as_vit, only="resnet"),
                "quirks, CPA codes kept in float64": dict(tweak=cpa_codes_unrounded)}
    for title, variant in variants.items():
        gaps: dict[str, float] = {}
        for case in meta["cases"]:
            if variant.get("only", case["branch"]) != case["branch"]:
                continue
            fixture = load_case(case["name"])
            with mock.patch.object(mgca_words, "mgca_word_slots", variant.get("words", mgca_words.mgca_word_slots)):
                terms, *_ = run(case, variant.get("objectives_quirks", True), fixture, variant.get("tweak"))
            for term, value in terms.items():
                gap = worst(value, fixture[f"term/{term}"]) / abs(fixture[f"term/{term}"].item())
                gaps[term] = max(gaps.get(term, 0.0), gap)
        print(f"{title}: largest relative |Δ| over the cases:", {t: f"{g:.1e}" for t, g in gaps.items()})
    print("global heads, per-GPU vs synchronised BatchNorm, 2 × 72 rows:",
          {k: f"{v:.1e}" for k, v in per_rank_statistics().items()})


if __name__ == "__main__":
    measure()
