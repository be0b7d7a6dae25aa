"""Frozen-encoder features, extracted once per (model, split) and reused by every head.

The encoders run in eval mode under ``torch.no_grad`` (MGCA's linear probe freezes the
backbone and its BatchNorm/dropout); batches come from a DataLoader with a progress bar.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from kgvlp.progress import track

from kgvlp.data.text import split_sentences, tokenize_reports
from kgvlp.eval.data import EvalSample, collate_samples
from kgvlp.models.vlp import VLPModel


@dataclass
class ImageFeatures:
    """global_vector (N, D) backbone; embed (N, 128) shared projection or None;
    labels (N, K); tokens (N, P, Dt) only when asked for."""
    global_vector: Tensor
    embed: Tensor | None
    labels: Tensor
    tokens: Tensor | None = None


def loader(dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0, seed: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate_samples,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


def has_projections(model: VLPModel) -> bool:
    return hasattr(model, "projections")


@torch.no_grad()
def image_features(model: VLPModel, dataset, device: torch.device, batch_size: int = 64,
                   keep_tokens: bool = False, desc: str = "features", progress: bool = True) -> ImageFeatures:
    model.eval().to(device)
    globals_, embeds, labels, tokens = [], [], [], []
    for samples in track(loader(dataset, batch_size), desc, enabled=progress):
        images = torch.stack([s.image for s in samples]).to(device)
        out = model.image_encoder(images)
        globals_.append(out.global_vector.float().cpu())
        if has_projections(model):
            embeds.append(model.projections.image(out.global_vector).float().cpu())
        if keep_tokens:
            tokens.append(out.tokens.float().cpu())
        labels.append(torch.stack([s.labels for s in samples]))
    return ImageFeatures(global_vector=torch.cat(globals_), embed=torch.cat(embeds) if embeds else None,
                         labels=torch.cat(labels), tokens=torch.cat(tokens) if keep_tokens else None)


def text_tokenizer(model: VLPModel):
    from kgvlp.models.text import load_tokenizer
    return load_tokenizer(model.model_cfg.text)


@torch.no_grad()
def text_embeddings(model: VLPModel, reports: list[list[str]], device: torch.device,
                    batch_size: int = 64, tokenizer=None, progress: bool = True, head: bool = True) -> Tensor:
    """Shared-space (128-d) embeddings of reports given as cleaned sentence lists: (N, 128);
    ``head=False``: the text tower's report vector before the text head."""
    model.eval().to(device)
    tokenizer = tokenizer or text_tokenizer(model)
    out = []
    for start in track(range(0, len(reports), batch_size), "text", enabled=progress):
        text = tokenize_reports(tokenizer, reports[start:start + batch_size], model.model_cfg.text.max_length)
        encoded = model.text_encoder(text.input_ids.to(device), text.attention_mask.to(device))
        vector = model.projections.text(encoded.global_vector) if head else encoded.global_vector
        out.append(vector.float().cpu())
    return torch.cat(out)


def prompt_sentences(prompt: str) -> list[str]:
    return split_sentences(prompt, min_words=1)


def samples_of(dataset) -> list[EvalSample]:
    return [dataset[i] for i in range(len(dataset))]
