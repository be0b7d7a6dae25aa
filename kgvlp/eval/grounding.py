"""Grounding on SynthCXR: does a model's word→patch map point at the finding a word names?

Two maps, so that every model gets a score:

- ``cta``: MGCA's word side attends patches with a_ij = softmax_j(w_i·p_j/τ₂) (eq. 4), w and
  p from CTA's word and image heads. Only models trained with CTA have it.
- ``similarity``: cos(w_i, p_j) of the word tokens and patch tokens in the space where the
  model compares image and text: through the shared projections applied to every token
  (the global heads ITA/MLIP train; MaskCLIP's reading of a CLIP model), else the tokens
  themselves when both sides have one width (PRIOR's projected local features). Any model
  with either gets a score — ITA-only and PRIOR models included.

For every report mention of a *present* finding (negated mentions have nothing to point
at) the mention's map is the mean of its words' rows; it is a hit when its peak patch
overlaps the union of that finding's instance masks (pointing game, Zhang et al. 2016, at
patch resolution). ``chance`` is the hit rate of a uniformly random patch, the fraction of
patches the target touches, averaged over mentions (overall and per finding): the floor a
model with no grounding scores on average.
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


MAP_SOURCES = ("cta", "similarity")


def cta_objective(model: VLPModel) -> CTA | None:
    """The model's CTA objective (found by its type), or None when it was not trained with one."""
    return next((o for o in model.objectives.objectives.values() if isinstance(o, CTA)), None)


def similarity_space(model: VLPModel) -> str | None:
    """Where word and patch tokens can be compared: "projections" (the shared heads),
    "tokens" (one width on both sides) or None."""
    dims = model.dims
    if hasattr(model, "projections") and dims.image_token_width == dims.image_width:
        return "projections"
    if dims.image_token_width == dims.text_width:
        return "tokens"
    return None


def map_sources(model: VLPModel) -> list[str]:
    """The word→patch maps this model has (MAP_SOURCES order)."""
    return [s for s, ok in (("cta", cta_objective(model) is not None),
                            ("similarity", similarity_space(model) is not None)) if ok]


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


def _project_tokens(head, tokens: Tensor) -> Tensor:
    batch, count, width = tokens.shape
    return head(tokens.reshape(batch * count, width)).reshape(batch, count, -1)


@torch.no_grad()
def word_patch_similarity(model: VLPModel, batch: Batch) -> tuple[Tensor, Tensor]:
    """(B, W, P) cosine of every word token with every patch token (``similarity_space``)
    and the (B, W) word mask."""
    space = similarity_space(model)
    if space is None:
        raise ValueError("the model has neither shared projections nor image and text tokens of one width")
    features = model.encode(batch, frozenset({Need.IMAGE_TOKENS, Need.WORDS}))
    words, patches = features.word_tokens, features.image_tokens
    if space == "projections":   # eval mode: the heads' BatchNorm uses its running statistics
        words = _project_tokens(model.projections.text, words)
        patches = _project_tokens(model.projections.image, patches)
    similarity = F.normalize(words.float(), dim=-1) @ F.normalize(patches.float(), dim=-1).transpose(1, 2)
    return similarity, features.word_mask


_MAPS = {"cta": word_patch_attention, "similarity": word_patch_similarity}


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
                  progress: bool = True, source: str = "cta") -> tuple[dict[str, float], list[MentionMap]]:
    """Pointing-game accuracy of one map ``source`` (MAP_SOURCES) over all positive mentions
    of ``dataset``: ``pointing_game`` and ``chance`` (overall), ``acc/<finding>`` and
    ``chance/<finding>`` (per finding), ``mentions``; the first ``keep_maps`` maps for plots."""
    if source not in _MAPS:
        raise ValueError(f"grounding map source {source!r}; valid choices: {', '.join(MAP_SOURCES)}")
    model.eval().to(device)
    tokenizer = text_tokenizer(model)
    hits, chance, per_finding, kept = [], [], {}, []
    offset = 0
    for samples in track(loader(dataset, batch_size), f"grounding ({source})", enabled=progress):
        batch = _batch(samples, tokenizer, model.model_cfg.text.max_length, device)
        attention, word_mask = _MAPS[source](model, batch)
        for i, sample in enumerate(samples):
            for mention_map in _mention_maps(sample, offset + i, attention[i].cpu(), word_mask[i].cpu()):
                grid = mention_map.attention.shape[0]
                hit_chance = float((patch_coverage(mention_map.mask, grid) > 0).float().mean())
                hits.append(mention_map.hit)
                chance.append(hit_chance)
                per_finding.setdefault(mention_map.finding, []).append((mention_map.hit, hit_chance))
                if len(kept) < keep_maps:
                    kept.append(mention_map)
        offset += len(samples)
    if not hits:
        return {"pointing_game": float("nan"), "mentions": 0}, kept
    out = {"pointing_game": sum(hits) / len(hits), "chance": sum(chance) / len(chance), "mentions": len(hits)}
    for finding, pairs in sorted(per_finding.items()):
        out[f"acc/{finding}"] = sum(h for h, _ in pairs) / len(pairs)
        out[f"chance/{finding}"] = sum(c for _, c in pairs) / len(pairs)
    return out, kept
