"""Grounding on SynthCXR: does CTA's word→patch attention point at the finding a word names?

MGCA's word side attends patches with a_ij = softmax_j(w_i·p_j/τ₂) (eq. 4), w and p from
CTA's word and image heads. For every report mention of a *present* finding (negated
mentions have nothing to point at) the mention's map is the mean of its words' rows; it is
a hit when its peak patch overlaps the union of that finding's instance masks (pointing
game, Zhang et al. 2016, at patch resolution). ``chance`` is the hit rate of a uniformly
random patch, the floor a model with no grounding scores on average.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from kgvlp.progress import track

from kgvlp.data.batch import Batch
from kgvlp.data.text import tokenize_reports
from kgvlp.eval.data import EvalSample
from kgvlp.eval.features import loader, text_tokenizer
from kgvlp.eval.metrics import pointing_hits
from kgvlp.models.features import Need
from kgvlp.models.vlp import VLPModel
from kgvlp.objectives.cta import CTA


def cta_objective(model: VLPModel) -> CTA | None:
    """The model's CTA objective (found by its type), or None when it was not trained with one."""
    return next((o for o in model.objectives.objectives.values() if isinstance(o, CTA)), None)


@dataclass
class MentionMap:
    """One grounded mention: its attention over the patch grid and its target mask."""
    sample: int
    finding: str
    words: list[str]
    attention: Tensor      # (g, g)
    mask: Tensor           # (S, S) bool
    hit: bool


def patch_coverage(mask: Tensor, grid: int) -> Tensor:
    """Fraction of each of grid×grid patches inside ``mask`` (S, S) → (grid·grid,)."""
    return F.adaptive_avg_pool2d(mask.float()[None, None], grid).flatten()


def _batch(samples: list[EvalSample], tokenizer, max_length: int, device) -> Batch:
    text = tokenize_reports(tokenizer, [s.sentences for s in samples], max_length)
    return Batch(images=torch.stack([s.image for s in samples]), input_ids=text.input_ids,
                 attention_mask=text.attention_mask, word_index=text.word_index,
                 sentence_index=text.sentence_index,
                 sample_index=torch.arange(len(samples))).to(device)


@torch.no_grad()
def word_patch_attention(model: VLPModel, batch: Batch) -> tuple[Tensor, Tensor]:
    """(B, W, P) word→patch attention from CTA's heads and the (B, W) word mask."""
    features = model.encode(batch, frozenset({Need.IMAGE_TOKENS, Need.WORDS}))
    return cta_objective(model).word_patch_attention(features).float(), features.word_mask


def _mention_maps(sample: EvalSample, index: int, attention: Tensor, word_mask: Tensor) -> list[MentionMap]:
    grid = int(round(attention.shape[-1] ** 0.5))
    words_of_report = " ".join(sample.sentences).split()
    maps = []
    for mention in sample.mentions:
        rows = list(mention.get("instances") or [])
        words = [w for w in mention.get("words") or [] if w < word_mask.shape[0] and word_mask[w]]
        if mention.get("negated") or not rows or not words or sample.masks is None:
            continue
        target = sample.masks[rows].any(dim=0)
        if not target.any():
            continue
        mean_map = attention[words].mean(dim=0)
        hit = bool(pointing_hits(mean_map[None], patch_coverage(target, grid)[None])[0])
        maps.append(MentionMap(index, mention.get("finding", "?"),
                               [words_of_report[w] for w in words if w < len(words_of_report)],
                               mean_map.reshape(grid, grid).cpu(), target, hit))
    return maps


def pointing_game(model: VLPModel, dataset, device, batch_size: int = 32, keep_maps: int = 8,
                  progress: bool = True) -> tuple[dict[str, float], list[MentionMap]]:
    """Pointing-game accuracy over all positive mentions of ``dataset``; per-finding
    accuracies as ``acc/<finding>``; the first ``keep_maps`` maps for plots."""
    model.eval().to(device)
    tokenizer = text_tokenizer(model)
    hits, chance, per_finding, kept = [], [], {}, []
    offset = 0
    for samples in track(loader(dataset, batch_size), "grounding", enabled=progress):
        batch = _batch(samples, tokenizer, model.model_cfg.text.max_length, device)
        attention, word_mask = word_patch_attention(model, batch)
        for i, sample in enumerate(samples):
            for mention_map in _mention_maps(sample, offset + i, attention[i].cpu(), word_mask[i].cpu()):
                hits.append(mention_map.hit)
                grid = mention_map.attention.shape[0]
                chance.append(float((patch_coverage(mention_map.mask, grid) > 0).float().mean()))
                per_finding.setdefault(mention_map.finding, []).append(mention_map.hit)
                if len(kept) < keep_maps:
                    kept.append(mention_map)
        offset += len(samples)
    if not hits:
        return {"pointing_game": float("nan"), "mentions": 0}, kept
    out = {"pointing_game": sum(hits) / len(hits), "chance": sum(chance) / len(chance), "mentions": len(hits)}
    out.update({f"acc/{f}": sum(v) / len(v) for f, v in sorted(per_finding.items())})
    return out, kept
