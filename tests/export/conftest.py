"""Session-wide tiny runs and their exports (export is the slow part: build once)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.export.outside import PROMPTS
from tests.export.runs import make_run

OUTSIDE = Path(__file__).with_name("outside.py")


@pytest.fixture(scope="session")
def vit_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("vit") / "run", "vit_test")


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("resnet") / "run", "resnet_test")


@pytest.fixture(scope="session")
def vit_export(vit_run, tmp_path_factory) -> Path:
    from kgvlp.export import export
    return export(vit_run, tmp_path_factory.mktemp("vit_export") / "out")


@pytest.fixture(scope="session")
def resnet_export(resnet_run, tmp_path_factory) -> Path:
    from kgvlp.export import export
    return export(resnet_run, tmp_path_factory.mktemp("resnet_export") / "out")


def reference(run: Path, out: Path) -> Path:
    """kgvlp's own outputs (model.encode) on seeded grey images and PROMPTS, saved for a
    subprocess to compare against."""
    from kgvlp.data.batch import Batch
    from kgvlp.engine.checkpoint import load_model
    from kgvlp.models.features import Need
    from kgvlp.models.text import load_tokenizer
    model, experiment = load_model(run)
    cfg = experiment.config.model
    tokens = load_tokenizer(cfg.text)(PROMPTS, padding="max_length", max_length=cfg.text.max_length,
                                      truncation=True, return_tensors="pt")
    size = cfg.image.image_size
    images = torch.randn(len(PROMPTS), cfg.image.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    minus_one = torch.full_like(tokens.input_ids, -1)
    batch = Batch(images=images, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                  word_index=minus_one, sentence_index=minus_one, sample_index=torch.arange(len(PROMPTS)))
    with torch.no_grad():
        features = model.encode(batch, frozenset({Need.IMAGE_EMBED, Need.TEXT_EMBED, Need.IMAGE_TOKENS}))
    ref = {"images": images, "ids": tokens.input_ids, "image_embed": features.image_embed,
           "text_embed": features.text_embed, "image_global": features.image_global,
           "text_global": features.text_global,
           "zero_shot": (features.image_embed @ features.text_embed.T).argmax(dim=1)}
    if cfg.image.name.startswith("vit"):
        ref.update(image_tokens=features.image_tokens, hf_image_global=features.image_global)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(out))
    return out


def run_outside(fmt: str, folder: Path, ref: Path) -> str:
    """The fresh-interpreter check (tests/export/outside.py); fails with its output."""
    result = subprocess.run([sys.executable, str(OUTSIDE), fmt, str(folder), str(ref)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result.stdout
