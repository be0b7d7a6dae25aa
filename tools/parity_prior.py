"""Run the official PRIOR losses on fixed inputs and write their numbers as test fixtures.

    python tools/parity_prior.py /path/to/PRIOR [--out tests/prior/data]

``/path/to/PRIOR`` is a checkout (or ``git archive``) of QtacierP/PRIOR at the pinned commit
086bf2e; every file imported is checked against that commit's git blob ids first. Not run
in CI (it needs the official code, which is never committed here); the fixtures it writes
(numbers only) are read by ``tests/prior/test_official_parity.py``.

What runs: ``Prior.stage{1,2,3}_step`` of ``codes/prior/models/prior.py`` unmodified, in
float64, on seeded inputs that stand in for the encoders' token-level outputs (layer4 tokens
and the attention-pooled vector before the projections, the text encoder's last hidden
states before its projection, the sentence index), for two batch sizes. Tiny widths.
Recorded: the inputs, every parameter, every loss term, the intermediates below, and the
gradient of the stage's total loss for every input and parameter.

Only imports are stubbed: pytorch_lightning's LightningModule (an nn.Module with rank 0),
pl_bolts (only its distributed gather, optimizers and schedulers are imported; none runs on
one process), kornia (``ssim`` is imported, never called), the Hugging Face download of
Bio_ClinicalBERT's config (a tiny BertConfig instead, same code path), and
segmentation_models_pytorch's ``Conv2dReLU(use_batchnorm=…)`` keyword, renamed ``use_norm``
in the installed smp 0.6 (mapped to it; same modules). Random draws are fixed, not changed:
the Gumbel noise of the sentence bank is read from the fixture (``F.gumbel_softmax``'s own
formula on that noise) and the image decoder's Dropout2d draws after ``torch.manual_seed``
(``DROPOUT_SEED``), which the test repeats.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PINNED_COMMIT = "086bf2e"
# git blob ids of the imported files at 086bf2e (`git ls-tree -r 086bf2e codes/prior`).
PINNED_BLOBS = {
    "codes/prior/models/prior.py": "bfad0647054ddf1cdd2c542783ef028394e79b36",
    "codes/prior/models/base.py": "d0c2cabd7a07c846bb3ac6860f5997d3571384eb",
    "codes/prior/modules/spb.py": "2f7eef485b1208350e6535cb40e6c430d166697b",
    "codes/prior/modules/local_attention.py": "7384c515d11f1d30bdef98bea323606d6c08f0dc",
    "codes/prior/modules/sentence_pool.py": "e69c0d8f8f831054e7e7a2e94529e758dbfd5875",
    "codes/prior/modules/gather.py": "5a1aece389de4a10847d459c802839adf89d9b2c",
    "codes/prior/decoders/sentence.py": "aed6d6a9059a3278401ada55c27186110bedbcc8",
    "codes/prior/decoders/image.py": "d236f3b1a5356462c535beb63b19f02c9d7fb589",
}

def images(pixels_u8: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) uint8 → (B, 1, 224, 224) float64 in [0, 1], each pixel an 8×8 block."""
    return (pixels_u8.double() / 255.0).repeat_interleave(8, -2).repeat_interleave(8, -1)


# Sizes: D embed, image/text encoder widths (different, to catch transposes), K prototypes,
# Q queries (reports longer than Q are cut in stage 3), L tokens; 224 px (the official image
# decoder's resnet50 sizes: 7×7 → 224 in five ×2 steps).
EMBED, IMAGE_WIDTH, TEXT_WIDTH, BANK, QUERIES, TOKENS, GRID, IMAGE = 16, 12, 10, 8, 4, 24, 7, 224
DECODER_HEADS, DECODER_FFN = 4, 32
SENTENCES = {4: [3, 6, 1, 5], 6: [2, 6, 4, 1, 5, 3]}     # sentences per report, per batch size
MAX_SENTENCES = 6
DROPOUT_SEED = 1234
SCALES = {"logit_scale": 10.0, "local_logit_scale": 5.0}  # exp(·) of the learnable scales


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_pinned(root: Path) -> None:
    for rel, blob in PINNED_BLOBS.items():
        path = root / rel
        if not path.is_file():
            sys.exit(f"{path}: missing; expected QtacierP/PRIOR at {PINNED_COMMIT}")
        if git_blob(path.read_bytes()) != blob:
            sys.exit(f"{path}: not the file of QtacierP/PRIOR at {PINNED_COMMIT} (blob {blob})")


def stub_imports(config) -> None:
    """Import stand-ins for what the loss code imports but never runs on one process."""
    class LightningModule(nn.Module):
        local_rank = 0
        global_rank = 0

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    module("pytorch_lightning", LightningModule=LightningModule)
    unused = dict(SyncFunction=None, linear_warmup_decay=None, LinearWarmupCosineAnnealingLR=None, LARS=None)
    for name in ("pl_bolts", "pl_bolts.models", "pl_bolts.models.self_supervised",
                 "pl_bolts.models.self_supervised.simclr", "pl_bolts.models.self_supervised.simclr.simclr_module",
                 "pl_bolts.optimizers", "pl_bolts.optimizers.lr_scheduler", "pl_bolts.optimizers.lars"):
        module(name, **unused)
    module("kornia")
    module("kornia.losses", ssim=None)

    import segmentation_models_pytorch.base as smp_base

    class Conv2dReLU(smp_base.Conv2dReLU):   # smp ≤ 0.4's keyword for the same modules
        def __init__(self, in_channels, out_channels, kernel_size, padding=0, stride=1, use_batchnorm=True):
            super().__init__(in_channels, out_channels, kernel_size, padding=padding, stride=stride,
                             use_norm="batchnorm" if use_batchnorm else False)

    import segmentation_models_pytorch as smp
    smp.base = module("segmentation_models_pytorch.base", Conv2dReLU=Conv2dReLU, Attention=smp_base.Attention)

    import transformers
    transformers_auto = types.SimpleNamespace(from_pretrained=lambda name: config)
    return transformers_auto, transformers


class FixedEncoder(nn.Module):
    """Stands in for an encoder: returns the given token-level outputs."""

    def __init__(self, outputs, width, name=None):
        super().__init__()
        self.outputs, self.width, self.name = outputs, width, name

    def forward(self, x, return_features=False):
        if self.name is None:                           # text: a BERT output dict
            return {"last_hidden_state": self.outputs["text_states"], "pooler_output": None}
        return self.outputs["image_tokens"], self.outputs["image_global"], []

    def get_width(self):
        return self.width

    def get_local_width(self):
        return self.width

    def get_name(self):
        return self.name

    def get_last_spatial_info(self):
        return [GRID, GRID]


def make_inputs(batch: int) -> dict[str, torch.Tensor]:
    """Seeded float32-exact inputs (stored as float32, computed in float64)."""
    gen, f32 = torch.Generator().manual_seed(100 + batch), dict(dtype=torch.float32)
    counts = SENTENCES[batch]
    sentence_index = torch.zeros(batch, TOKENS, dtype=torch.long)       # official: 1-based, 0 = none
    attention = torch.zeros(batch, TOKENS, dtype=torch.long)
    for b, n in enumerate(counts):
        lengths = torch.randint(1, 4, (n,), generator=gen).tolist()
        position = 1                                                    # [CLS] at 0
        for s, length in enumerate(lengths):
            sentence_index[b, position:position + length] = s + 1
            position += length
        attention[b, :position + 1] = 1                                 # …, [SEP]
    return {
        "image_tokens": torch.randn(batch, GRID * GRID, IMAGE_WIDTH, generator=gen, **f32),
        "image_global": torch.randn(batch, IMAGE_WIDTH, generator=gen, **f32),
        "text_states": torch.randn(batch, TOKENS, TEXT_WIDTH, generator=gen, **f32),
        "sentence_index": sentence_index,
        "attention_mask": attention,
        "images_u8": torch.randint(0, 256, (batch, 1, IMAGE // 8, IMAGE // 8), generator=gen, dtype=torch.uint8),
        "noise_sentences": -torch.empty(batch, MAX_SENTENCES, BANK, **f32).exponential_(generator=gen).log(),
        "noise_generated": -torch.empty(batch, QUERIES, BANK, **f32).exponential_(generator=gen).log(),
    }


class GumbelFromFixture:
    """``F.gumbel_softmax(logits, tau, hard=False)`` with the noise of the fixture: the first
    call reads the real sentences' rows, the second (stage 3) the generated prototypes' rows,
    both flattened report by report as the official code concatenates them."""

    def __init__(self, inputs, stage: str):
        counts = torch.tensor(SENTENCES[inputs["image_tokens"].shape[0]])
        kept = counts.clamp(max=QUERIES) if stage == "stage3" else counts
        sentence_rows = torch.arange(MAX_SENTENCES)[None] < kept[:, None]
        generated_rows = torch.arange(QUERIES)[None] < counts.clamp(max=QUERIES)[:, None]
        self.draws = [inputs["noise_sentences"][sentence_rows], inputs["noise_generated"][generated_rows]]

    def __call__(self, logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        assert not hard
        noise = self.draws.pop(0)
        assert noise.shape == logits.shape, (noise.shape, logits.shape)
        return ((logits + noise.to(logits.dtype)) / tau).softmax(dim)    # torch's own formula


def build(prior_root: Path, inputs):
    from transformers import BertConfig
    config = BertConfig(hidden_size=EMBED, num_attention_heads=DECODER_HEADS, intermediate_size=DECODER_FFN,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, vocab_size=8,
                        max_position_embeddings=32)
    config._attn_implementation = "eager"
    auto, _ = stub_imports(config)
    sys.path.insert(0, str(prior_root / "codes"))
    import prior.decoders.sentence as sentence_decoder
    sentence_decoder.AutoConfig = auto                 # no download: the tiny config above
    from prior.models.prior import Prior

    torch.manual_seed(0)
    model = Prior(FixedEncoder(inputs, TEXT_WIDTH), FixedEncoder(inputs, IMAGE_WIDTH, "resnet50"), gpus=[0],
                  embed_dim=EMBED, spb_k=BANK, num_queries=QUERIES, train_dataset=range(8), batch_size=4)
    model = model.double().train()
    with torch.no_grad():     # float32-exact values, so the fixture stores them as float32
        for param in model.parameters():
            param.copy_(param.float().double())
        for name, value in SCALES.items():
            getattr(model, name).fill_(torch.tensor(value).log().float().double())
    return model


def seed_dropout(*_) -> None:
    torch.manual_seed(DROPOUT_SEED)


class Recorder:
    """Wraps instance methods to keep what they returned (the math is the official's)."""

    def __init__(self, model):
        self.values: dict[str, list] = {}
        for name in ("encode_image", "encode_text", "get_global_text_representation", "matching_label",
                     "local_alignment_loss"):
            self._wrap(model, name)
        for name in ("item_gather", "sentence_bank", "sentence_decoder", "image_decoder"):
            getattr(model, name).register_forward_hook(
                lambda module, args, output, name=name: self.values.setdefault(name, []).append(output))
        model.image_decoder.image_dropout.register_forward_pre_hook(seed_dropout)
        self.model = model

    def _wrap(self, model, name):
        original = getattr(model, name)

        def recorded(*args, **kwargs):
            out = original(*args, **kwargs)
            if name == "local_alignment_loss":     # its patch contexts, before recon_image views them
                self.values.setdefault("patch_context", []).append(model.text_to_local_image_embed_stacks)
            self.values.setdefault(name, []).append(out)
            return out
        setattr(model, name, recorded)


def padded(stacks, slots):
    out = torch.zeros(len(stacks), slots, stacks[0].shape[-1], dtype=stacks[0].dtype)
    for b, stack in enumerate(stacks):
        out[b, :len(stack)] = stack[:slots]
    return out


def run_stage(prior_root: Path, batch: int, stage: str) -> dict[str, torch.Tensor]:
    inputs = make_inputs(batch)
    leaves = {k: inputs[k].double().requires_grad_(True) for k in ("image_tokens", "image_global", "text_states")}
    model = build(prior_root, leaves)
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record = Recorder(model)
    batch_dict = {"image": images(inputs["images_u8"]), "text": None,
                  "text_meta": {"sentence_index": inputs["sentence_index"]}}
    gumbel, F.gumbel_softmax = F.gumbel_softmax, GumbelFromFixture(inputs, stage)
    try:
        _, loss_dict = getattr(model, f"{stage}_step")(batch_dict)
    finally:
        F.gumbel_softmax = gumbel
    total = loss_dict[f"{stage}_loss"]
    total.backward()

    out: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        out[f"input/{key}"] = value
    for key, value in params.items():
        out[f"param/{key}"] = value.float() if value.is_floating_point() else value   # float32-exact
    for key, value in loss_dict.items():
        out[f"term/{key}"] = torch.as_tensor(value).detach().double().reshape(())
    for key, leaf in leaves.items():
        out[f"grad/input/{key}"] = leaf.grad
    for key, param in model.named_parameters():
        if param.grad is not None:
            out[f"grad/param/{key}"] = param.grad
    values = record.values
    local_image, global_image = values["encode_image"][0]
    out["mid/image_tokens"], out["mid/image_global"] = local_image, global_image
    out["mid/text_tokens"] = values["encode_text"][0][0]
    out["mid/sentences"] = padded(values["item_gather"][0], MAX_SENTENCES)
    out["mid/text_global"] = values["get_global_text_representation"][0]
    out["mid/patch_context"] = values["patch_context"][0]
    if "sentence_bank" in values:
        stacks = values["item_gather"][0]
        if stage == "stage3":
            stacks = [s[:QUERIES] for s in stacks]
        lengths = [len(s) for s in stacks]
        protos = values["sentence_bank"][0][0].split(lengths)
        out["mid/prototypes"] = padded(protos, MAX_SENTENCES)
    if stage == "stage3":
        out["mid/generated"] = values["sentence_decoder"][0]
        out["mid/assignment"] = torch.stack([torch.as_tensor(inds[1]) for inds in values["matching_label"]])
        out["mid/generated_text_global"] = values["get_global_text_representation"][1]
        generated_mix = values["sentence_bank"][1][0].split([min(n, QUERIES) for n in SENTENCES[batch]])
        out["mid/generated_mixed"] = padded(generated_mix, QUERIES)
        out["mid/reconstruction"] = values["image_decoder"][0]["output"][:, :, ::16, ::16]   # 14 × 14 of 224²
    return {k: v.detach().contiguous() for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prior_root", type=Path, help="QtacierP/PRIOR at 086bf2e (checkout or git archive)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/prior/data")
    args = parser.parse_args()
    check_pinned(args.prior_root)
    torch.set_default_dtype(torch.float64)
    from safetensors.torch import save_file
    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {"source": f"QtacierP/PRIOR@{PINNED_COMMIT}", "tool": "tools/parity_prior.py"}
    params = None
    for batch in SENTENCES:
        for stage in ("stage1", "stage2", "stage3"):
            tensors = run_stage(args.prior_root, batch, stage)
            run_params = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("param/")]}
            if params is None:       # every run starts from the same seeded parameters: stored once
                params = run_params
                save_file(params, str(args.out / "official_params.safetensors"), metadata=metadata)
            assert run_params.keys() == params.keys() and all(torch.equal(v, params[k]) for k, v in run_params.items())
            path = args.out / f"official_{stage}_b{batch}.safetensors"
            save_file(tensors, str(path), metadata=metadata)
            print(f"{path}: {len(tensors)} tensors, {path.stat().st_size // 1024} KiB, "
                  f"loss {tensors[f'term/{stage}_loss'].item():.12f}")


if __name__ == "__main__":
    main()
