"""Run the official MGCA code (HKU-MedAI/MGCA @680fe4a) on fixed seeded encoder outputs in
float64 and write its inputs, every term, intermediate and gradient to small safetensors
fixtures (tests/mgca_parity/*.safetensors). tests/mgca_parity/test_parity.py feeds the same
encoder outputs through kgvlp (``official_quirks: true``) and compares.

Not run in CI: it needs the official code, which is never committed here. For example:

    mkdir -p /work/scratch/mgca-official
    git --git-dir=<MGCA mirror> archive 680fe4a | tar -x -C /work/scratch/mgca-official
    python tools/parity_mgca.py /work/scratch/mgca-official

What runs is the official code itself, unmodified: ``MGCA.__init__`` and ``MGCA.forward``
(mgca/models/mgca/mgca_module.py: ITA, CTA with the clipped word/patch weights, CPA with its
Sinkhorn), ``ImageEncoder.forward`` / ``resnet_forward`` (the ViT and ResNet branches' patch
and global processing), ``BertEncoder.forward`` / ``aggregate_tokens`` (the word merge from
token-level states, token ids with '##' pieces, and the last layer's attention) and the
official ``GlobalEmbedding`` / ``LocalEmbedding`` heads (mgca/models/backbones/encoder.py).
The imported files are checked against their git blob ids at the pinned commit.

Only imports and the backbones are stubbed, from outside:
- pytorch_lightning (``LightningModule`` = ``nn.Module`` whose ``save_hyperparameters``
  records the constructor's arguments, as Lightning's does), cosine_annealing_warmup and the
  dataset modules, which the forward never calls;
- the pretrained backbones: ``BertModel.from_pretrained`` returns a module that hands back
  the given last hidden state and attentions; ``create_vit`` a module that hands back the
  given final-norm token sequence and keeps the given last-block attention map where the
  official ViT keeps it (``blocks[-1].attn.attention_map``); ``resnet_50`` a ResNet whose
  stem and layers 1–2 pass through and whose layer3/layer4 return the given feature maps;
  ``torch.hub.load_state_dict_from_url`` (DeiT weights) returns an empty state dict;
- tiny widths go in through the official constructors' own arguments (``emb_dim``,
  ``hidden_dim``, ``num_prototypes``), the tokenizer through ``BertEncoder(tokenizer=...)``.

Batch sizes are 5 and 7: the official forward computes top-5 retrieval accuracy, which needs
at least 5 samples. Token ids come from kgvlp's tokenizer path (``tokenize_reports`` with the
bundled MiniLM WordPiece vocabulary) on ``REPORTS`` below; the test re-tokenises them and
checks it gets the same ids.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import sys
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "mgca_parity"
COMMIT = "680fe4a6ee0cc454ab58fd1a8b28fee81c03d742"
# git blob ids of the files the tool imports, at COMMIT (git ls-tree 680fe4a).
BLOBS = {"mgca/models/mgca/mgca_module.py": "fd6711c0b2a501c0cde91b22e52b79f0de537f17",
         "mgca/models/backbones/encoder.py": "828c0140ed7ca2fbfd9638ab3b66f41fd21b4ae0"}

MAX_LENGTH = 16          # L tokens: the official layout then has L - 1 = 15 word slots
TEXT_WIDTH, TEXT_HEADS = 12, 2
VIT_WIDTH, VIT_HEADS, PATCHES = 10, 2, 9
RESNET_LAYER3, RESNET_LAYER4 = 6, 10       # channels; layer3 is 3×3 (9 tokens), layer4 2×2
EMBED, HIDDEN, PROTOTYPES = 8, 16, 10
BATCH_SIZES = (5, 7)
# Reports chosen for the layout's edge cases (L = 16): word pieces ('##'), a report cut to
# the token budget (the official merge then drops its last word and has no [SEP] slot), one
# whose [SEP] is the last token the official loop visits, short ones with many pad slots.
REPORTS = [
    "Mild cardiomegaly. Bibasilar atelectasis.",
    "The heart size is normal. No focal consolidation, pleural effusion or pneumothorax.",
    "Lungs are clear. No pneumothorax.",
    "Right lower lobe opacity concerning for pneumonia. Hyperinflated lungs with emphysema.",
    "Stable mediastinal contours. Interval removal of the catheter.",
    "Degenerative changes of the thoracic spine.",
    "Small bilateral effusions. Cardiomediastinal silhouette unremarkable.",
]


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_commit(official: Path, allow_other: bool) -> None:
    wrong = [rel for rel, blob in BLOBS.items()
             if not (official / rel).is_file() or git_blob_id(official / rel) != blob]
    if wrong and not allow_other:
        raise SystemExit(f"{official}: not the official code at {COMMIT[:7]} (files differ from the "
                         f"pinned blobs, or are missing): {wrong}")


# ---------------------------------------------------------------------------------------
# stubs: imports the forward never uses, and the pretrained backbones


class Given(nn.Module):
    """Returns the tensor it was handed (a backbone stage whose output is a fixture input)."""

    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, *args, **kwargs):
        return self.value


class StubBert(nn.Module):
    """``BertModel`` stand-in: the given last hidden state and last-layer attention."""

    def __init__(self):
        super().__init__()
        self.hidden, self.attention = None, None

    def forward(self, ids, attn_mask, token_type, return_dict=True, mode="text"):
        return types.SimpleNamespace(last_hidden_state=self.hidden, attentions=(self.attention,))


class StubViT(nn.Module):
    """``create_vit`` stand-in: the given token sequence; the given attention map kept in
    ``blocks[-1].attn.attention_map``, where the official ViT's register_blk hook puts it."""

    def __init__(self):
        super().__init__()
        block = nn.Module()
        block.attn = types.SimpleNamespace(attention_map=None)
        self.blocks = nn.ModuleList([block])
        self.tokens = None

    def forward(self, x, register_blk=-1):
        return self.tokens


def stub_resnet() -> nn.Module:
    net = nn.Module()
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2"):
        setattr(net, name, nn.Identity())
    net.layer3, net.layer4 = Given(), Given()
    return net


def install_stubs(official: Path) -> None:
    class LightningModule(nn.Module):
        trainer = None

        def save_hyperparameters(self):
            frame = inspect.currentframe().f_back
            info = inspect.getargvalues(frame)
            hparams = {name: info.locals[name] for name in info.args if name != "self"}
            hparams.update(info.locals.get(info.keywords) or {})
            self.hparams = types.SimpleNamespace(**hparams)

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    placeholder = type("Placeholder", (), {})
    module("pytorch_lightning", LightningModule=LightningModule, Trainer=placeholder,
           seed_everything=lambda *a, **k: None)
    module("pytorch_lightning.callbacks", EarlyStopping=placeholder, LearningRateMonitor=placeholder,
           ModelCheckpoint=placeholder)
    module("pytorch_lightning.loggers", WandbLogger=placeholder)
    module("pytorch_lightning.plugins", DDP2Plugin=placeholder, DDPPlugin=placeholder)
    module("cosine_annealing_warmup", CosineAnnealingWarmupRestarts=placeholder)
    module("mgca.datasets.data_module", DataModule=placeholder)
    module("mgca.datasets.pretrain_dataset", MultimodalPretrainingDataset=placeholder,
           multimodal_collate_fn=None)
    module("mgca.datasets.transforms", DataTransforms=placeholder)
    module("mgca.models.backbones.med",
           BertModel=types.SimpleNamespace(from_pretrained=lambda *a, **k: StubBert()))
    module("mgca.models.backbones.vits", create_vit=lambda name, *a, **k: (StubViT(), VIT_WIDTH))
    module("mgca.models.backbones.cnn_backbones",
           resnet_50=lambda pretrained=True: (stub_resnet(), RESNET_LAYER4, RESNET_LAYER3))
    sys.path.insert(0, str(official))
    torch.hub.load_state_dict_from_url = lambda *a, **k: {"model": {}}


# ---------------------------------------------------------------------------------------
# inputs


def tokenized(batch_size: int):
    sys.path.insert(0, str(ROOT))
    from kgvlp.config.schema import TextEncoderConfig
    from kgvlp.data.text import split_sentences, tokenize_reports
    from kgvlp.models.text import load_tokenizer
    tokenizer = load_tokenizer(TextEncoderConfig())
    reports = [split_sentences(REPORTS[i % len(REPORTS)]) for i in range(batch_size)]
    return tokenizer, tokenize_reports(tokenizer, reports, MAX_LENGTH)


def attention(scores: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention probabilities; masked keys get exactly 0, as BERT's −10000 gives in float64."""
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def make_inputs(branch: str, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    _, tokens = tokenized(batch_size)
    valid = tokens.attention_mask.bool()
    randn = functools.partial(torch.randn, generator=generator, dtype=torch.float64)
    inputs = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
              "text_hidden": randn(batch_size, MAX_LENGTH, TEXT_WIDTH),
              "text_attention": attention(randn(batch_size, TEXT_HEADS, MAX_LENGTH, MAX_LENGTH), valid)}
    if branch == "vit":
        inputs["vit_tokens"] = randn(batch_size, 1 + PATCHES, VIT_WIDTH)
        inputs["vit_attention"] = attention(2 * randn(batch_size, VIT_HEADS, 1 + PATCHES, 1 + PATCHES))
    else:
        inputs["resnet_layer3"] = randn(batch_size, RESNET_LAYER3, 3, 3)
        inputs["resnet_layer4"] = randn(batch_size, RESNET_LAYER4, 2, 2)
    return inputs


# ---------------------------------------------------------------------------------------
# running the official code


class Recorder:
    """Keeps the local variables of the official functions as they return (sys.settrace), so
    intermediates are read without touching the official code."""

    def __init__(self, functions: dict[str, types.FunctionType], copied: tuple[str, ...] = ()):
        self.codes = {fn.__code__: name for name, fn in functions.items()}
        self.copied = copied     # functions whose tensors later code changes in place
        self.frames: dict[str, dict] = {}

    def _local(self, frame, event, arg):
        if event == "return":
            name = self.codes[frame.f_code]
            self.frames[name] = {k: v.detach().clone() if name in self.copied and isinstance(v, torch.Tensor)
                                 else v for k, v in frame.f_locals.items()}
        return self._local

    def _global(self, frame, event, arg):
        return self._local if frame.f_code in self.codes else None

    def __enter__(self):
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)


def build_official(branch: str, tokenizer):
    from mgca.models.backbones import encoder
    from mgca.models.mgca import mgca_module
    image_encoder, text_encoder = mgca_module.ImageEncoder, mgca_module.BertEncoder
    mgca_module.ImageEncoder = functools.partial(image_encoder, hidden_dim=HIDDEN)
    mgca_module.BertEncoder = functools.partial(text_encoder, tokenizer=tokenizer, emb_dim=TEXT_WIDTH,
                                                hidden_dim=HIDDEN)
    try:
        model = mgca_module.MGCA(img_encoder="vit_base" if branch == "vit" else "resnet_50",
                                 emb_dim=EMBED, num_prototypes=PROTOTYPES, gpus=0)
    finally:
        mgca_module.ImageEncoder, mgca_module.BertEncoder = image_encoder, text_encoder
    return model, mgca_module, encoder


def heads(model) -> dict[str, nn.Module]:
    """The official modules with parameters, under the fixture's names."""
    return {"image_global": model.img_encoder_q.global_embed, "image_local": model.img_encoder_q.local_embed,
            "text_global": model.text_encoder_q.global_embed, "text_local": model.text_encoder_q.local_embed,
            "prototypes": model.prototype_layer}


def run_case(official: Path, branch: str, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    tokenizer, _ = tokenized(batch_size)
    model, mgca_module, encoder = build_official(branch, tokenizer)
    model.train()
    with torch.no_grad():   # non-unit prototype rows: the official forward renormalises them
        model.prototype_layer.weight.mul_(1.0 + torch.rand(PROTOTYPES, 1))
    inputs = make_inputs(branch, batch_size, seed)
    named = {f"{head}.{name}": p for head, module in heads(model).items() for name, p in module.named_parameters()}
    params = {f"param/{name}": p.detach().clone() for name, p in named.items()}

    leaves = {"text_hidden": inputs["text_hidden"].clone().requires_grad_()}
    model.text_encoder_q.model.hidden = leaves["text_hidden"]
    model.text_encoder_q.model.attention = inputs["text_attention"]
    if branch == "vit":
        leaves["vit_tokens"] = inputs["vit_tokens"].clone().requires_grad_()
        model.img_encoder_q.model.tokens = leaves["vit_tokens"]
        model.img_encoder_q.model.blocks[-1].attn.attention_map = inputs["vit_attention"]
    else:
        leaves["resnet_layer3"] = inputs["resnet_layer3"].clone().requires_grad_()
        leaves["resnet_layer4"] = inputs["resnet_layer4"].clone().requires_grad_()
        model.img_encoder_q.model.layer3.value = leaves["resnet_layer3"]
        model.img_encoder_q.model.layer4.value = leaves["resnet_layer4"]
    images = torch.zeros(batch_size, 3, 2, 2)   # read only for its dtype (and the ResNet's upsampling)
    batch = {"imgs": images, "caption_ids": inputs["input_ids"],
             "attention_mask": inputs["attention_mask"], "token_type_ids": torch.zeros_like(inputs["input_ids"])}

    recorder = Recorder({"forward": mgca_module.MGCA.forward, "text": encoder.BertEncoder.forward},
                        copied=("text",))
    with recorder:
        loss_ita, loss_local, loss_proto, _, _ = model(batch, 0, "train")
    f, t = recorder.frames["forward"], recorder.frames["text"]
    terms = {"ita": loss_ita, "word": f["loss_word"], "patch": f["loss_patch"], "cpa": loss_proto,
             "local": loss_local}
    intermediates = {
        # text encoder post-processing (before CTA clips the weights in place)
        "word_feat": t["word_feat"], "report_feat": t["report_feat"],
        "word_attn_raw": t["last_atten_pt"], "pad_mask": f["mask"],
        # heads
        "image_embed": f["img_emb_q"], "text_embed": f["report_emb_q"],
        "patch_embed": f["patch_emb_q"], "word_embed": f["word_emb_q"],
        "image_feat": f["img_feat_q"], "patch_feat": f["patch_feat_q"],
        # ITA
        "ita_logits": f["scores"],
        # CTA
        "word_context": f["word_atten_output"], "word_logits": f["word_sim"],
        "word_weights": f["word_atten_weights"],
        "patch_context": f["patch_atten_output"], "patch_logits": f["patch_sim"],
        "patch_weights": f["patch_atten_weights"],
        # CPA
        "image_scores": f["img_proto_out"], "text_scores": f["report_proto_out"],
        "image_codes": f["img_code"], "text_codes": f["report_code"],
        "prototypes_normalised": model.prototype_layer.weight,
    }
    out = {f"input/{k}": v for k, v in inputs.items()}
    out.update(params)
    out.update({f"term/{k}": v.detach().reshape(()) for k, v in terms.items()})
    out.update({f"mid/{k}": v.detach().clone() for k, v in intermediates.items()})
    wrt = {**leaves, **named}
    for term in ("ita", "word", "patch", "cpa"):
        grads = torch.autograd.grad(terms[term], list(wrt.values()), retain_graph=True, allow_unused=True)
        for name, grad in zip(wrt, grads):
            if grad is not None:
                out[f"grad/{term}/{name}"] = grad
    return {k: v.contiguous() for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="the official MGCA code at 680fe4a (checkout or git archive)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--allow-other-commit", action="store_true")
    args = parser.parse_args(argv)
    check_commit(args.official, args.allow_other_commit)
    torch.set_default_dtype(torch.float64)
    install_stubs(args.official)
    from safetensors.torch import save_file
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"generated_by": "tools/parity_mgca.py", "commit": COMMIT, "reports": REPORTS,
                "max_length": MAX_LENGTH, "widths": {"text": TEXT_WIDTH, "vit": VIT_WIDTH,
                "resnet_layer3": RESNET_LAYER3, "resnet_layer4": RESNET_LAYER4, "embed": EMBED,
                "hidden": HIDDEN, "prototypes": PROTOTYPES}, "cases": []}
    for branch in ("vit", "resnet"):
        for seed, batch_size in enumerate(BATCH_SIZES):
            name = f"{branch}_b{batch_size}"
            tensors = run_case(args.official, branch, batch_size, seed)
            save_file(tensors, str(args.out / f"{name}.safetensors"))
            manifest["cases"].append({"name": name, "branch": branch, "batch_size": batch_size, "seed": seed})
            print(name, {k.removeprefix("term/"): f"{v.item():.6f}" for k, v in tensors.items()
                         if k.startswith("term/")})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
