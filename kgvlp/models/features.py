"""What the model computes for the objectives, and the vocabulary objectives ask for it with."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor


class Need(str, Enum):
    """Features an objective may ``require``. The model computes the union, once per step."""
    IMAGE_GLOBAL = "image_global"        # backbone global vector
    IMAGE_TOKENS = "image_tokens"        # backbone patch/region tokens + patch weights
    TEXT_GLOBAL = "text_global"          # report vector ([CLS])
    TEXT_TOKENS = "text_tokens"          # token states + attention mask + sentence index
    WORDS = "words"                      # sub-words merged into words, word weights, sentences
    IMAGE_EMBED = "image_embed"          # shared 128-d projected, normalised image vector
    TEXT_EMBED = "text_embed"            # shared 128-d projected, normalised report vector
    IMAGE_VIEW2 = "image_view2"          # backbone features of the second augmented view
    MASKED_IMAGE = "masked_image"        # encoder features of a masked view (MAE-style)
    ENTITIES = "entities"                # linked UMLS concept ids/flags/word masks
    DIVERGENCE = "divergence"            # EMA (divergence) encoder features, no gradient
    PROTOTYPE_BANK = "prototype_bank"    # the shared sentence-prototype memory bank
    SENTENCES = "sentences"              # mean token state per sentence + sentence mask
    PIXELS = "pixels"                    # the input images (reconstruction targets)
    LABELS = "labels"                    # multi-hot finding labels of the batch
    MGCA_WORDS = "mgca_words"            # MGCA's official word slots (L - 1, [SEP] a word)


@dataclass
class Features:
    """Everything computed for one batch. Unrequested fields stay None.

    B batch, P image tokens, L text tokens, W word slots (= L - 2), D* widths.
    image_global:   (B, Di)        image_tokens: (B, P, Di)
    patch_weights:  (B, P)         last block's CLS→patch attention, mean over heads
                                   (uniform for CNNs); raw, not clipped or normalised.
    text_global:    (B, Dt)        text_tokens:  (B, L, Dt) last-layer token states
    attention_mask: (B, L) bool    token_sentence_index: (B, L) long, -1 off-sentence
    cls_attention:  (B, L)         last layer's [CLS]→token attention, mean over heads
    word_tokens:    (B, W, Dt)     sum of each word's sub-word states (MGCA)
    word_mask:      (B, W) bool    True on real words
    word_weights:   (B, W)         [CLS] attention summed over each word's pieces
    word_sentence_index: (B, W) long, -1 on empty slots
    image_embed / text_embed: (B, 128) shared projection, L2-normalised
    sentences:      (B, S, Dt)     mean token state of each sentence (S sentence slots)
    sentence_mask:  (B, S) bool    True on real sentences
    images:         (B, C, H, W)   the input images, as the encoder saw them
    labels:         (B, F)         multi-hot finding labels (datasets that have them)
    extras:         features provided by services (view 2, masked view, divergence
                    encoders, memory bank, entities), keyed by ``Need`` value; each
                    service documents the typed object it puts here: a dataclass whose
                    ``batch_independent`` ClassVar names the fields that are not one row
                    per sample (a bank, a queue; see ``concat``).
    """
    image_global: Tensor | None = None
    image_tokens: Tensor | None = None
    patch_weights: Tensor | None = None
    text_global: Tensor | None = None
    text_tokens: Tensor | None = None
    attention_mask: Tensor | None = None
    token_sentence_index: Tensor | None = None
    cls_attention: Tensor | None = None
    word_tokens: Tensor | None = None
    word_mask: Tensor | None = None
    word_weights: Tensor | None = None
    word_sentence_index: Tensor | None = None
    image_embed: Tensor | None = None
    text_embed: Tensor | None = None
    sentences: Tensor | None = None
    sentence_mask: Tensor | None = None
    images: Tensor | None = None
    labels: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def _first(self) -> Tensor:
        for value in vars(self).values():
            if isinstance(value, Tensor):
                return value
        raise ValueError("Features holds no tensor")

    @property
    def batch_size(self) -> int:
        return self._first().shape[0]

    @property
    def device(self):
        return self._first().device

    @classmethod
    def concat(cls, parts: Sequence["Features"]) -> "Features":
        """The features of several micro-batches as those of one batch (gradient
        accumulation, kgvlp/engine/accumulation.py): per-sample tensors are concatenated
        along dim 0 (differentiably); a service's ``batch_independent`` fields (a bank, a
        queue, a callable) are the same for every micro-batch and are taken from the first."""
        return _concat_rows(list(parts))

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> "Features":
        """A copy with ``fn`` applied to every tensor, the extras' fields included."""
        return _map_tensors(self, fn)

    def tensors(self) -> Iterator[tuple[str, Tensor]]:
        """(path, tensor) of every tensor, in a fixed order: ``image_global``,
        ``extras.divergence.image_vector``, …; two Features of the same model share paths."""
        yield from _named_tensors(self, ())


def _fields(value) -> list[str]:
    return [f.name for f in dataclasses.fields(value)]


def _batch_independent(value) -> frozenset[str]:
    if isinstance(value, Features):
        return frozenset()
    if not hasattr(type(value), "batch_independent"):
        raise TypeError(f"{type(value).__name__} (a service's feature object) declares no "
                        "'batch_independent' ClassVar: name the fields that are not one row per "
                        "sample (frozenset() if none), so micro-batches can be concatenated")
    return type(value).batch_independent


def _concat_rows(parts: list):
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts, dim=0)
    if isinstance(first, dict):
        return {key: _concat_rows([part[key] for part in parts]) for key in first}
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        shared = _batch_independent(first)
        values = {name: getattr(first, name) if name in shared or getattr(first, name) is None
                  else _concat_rows([getattr(part, name) for part in parts]) for name in _fields(first)}
        return type(first)(**values)
    return first          # None, ints, callables: the same for every micro-batch


def _map_tensors(value, fn):
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, fn) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{name: _map_tensors(getattr(value, name), fn) for name in _fields(value)})
    return value


def _named_tensors(value, path: tuple[str, ...]) -> Iterator[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        yield ".".join(path), value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, (*path, str(key)))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for name in _fields(value):
            yield from _named_tensors(getattr(value, name), (*path, name))


@dataclass
class ModelDims:
    """What an objective or service may know about the encoders when it builds its modules."""
    image_width: int           # width of image_global
    image_token_width: int     # width of image_tokens
    text_width: int            # width of text_global / tokens / words
    num_image_tokens: int      # P
    max_length: int            # L; word slots W = L - 2
    embed_dim: int = 128       # shared projection width
    image_size: int = 224      # input side in pixels (decoders that reconstruct the image)
    sentence_slots: int = 32   # S: sentences per report in sentence features
    sync_batchnorm: bool = False   # heads use SyncBatchNorm (model.sync_batchnorm)
    text_head: str = "mgca"        # text half of the shared projection (model.text.head)
    # "vit": patch weights are the CLS attention; "cnn": uniform (the encoder class says which;
    # MGCA's official CTA treats the two branches differently)
    image_family: str = "vit"

    @property
    def word_slots(self) -> int:
        return self.max_length - 2
