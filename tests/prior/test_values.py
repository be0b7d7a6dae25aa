"""Each PRIOR loss equals a value computed by hand on tiny inputs; Hungarian matching."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kgvlp.models.features import Features
from kgvlp.modules.pooling import sentence_means
from kgvlp.objectives.base import StepContext
from kgvlp.objectives.masked_reconstruction import patchify, tokens_to_map
from kgvlp.modules.contrastive import clip_loss
from kgvlp.objectives.prior_global import PriorGlobal, PriorGlobalConfig
from kgvlp.objectives.prior_local import sentence_infonce, simsiam
from kgvlp.objectives.prototype_generation import (PrototypeGeneration, PrototypeGenerationConfig,
                                                   hungarian)
from kgvlp.objectives.sentence_prototypes import SentencePrototypes, SentencePrototypesConfig
from prior.helpers import bank_view, dims

CTX = StepContext(step=0)


def xent(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def test_sentence_means_average_each_sentences_tokens_and_mask_empty_slots():
    tokens = torch.arange(12, dtype=torch.float).reshape(1, 6, 2)        # token k = (2k, 2k+1)
    index = torch.tensor([[-1, 0, 0, 1, -1, -1]])                         # [CLS] s0 s0 s1 [SEP] pad

    means, mask = sentence_means(tokens, index, slots=3)

    torch.testing.assert_close(means[0], torch.tensor([[3.0, 4.0], [6.0, 7.0], [0.0, 0.0]]))
    assert mask.tolist() == [[True, True, False]]


def test_prior_global_is_clips_symmetric_cross_entropy_at_scale_100():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])            # unit rows

    loss = PriorGlobal(PriorGlobalConfig(), dims(2))(Features(image_global=image, text_global=text), CTX)

    sim = [[0.6, 0.0], [0.8, 1.0]]                           # sim[i][j] = image_i · text_j
    i2t = (xent([100 * s for s in sim[0]], 0) + xent([100 * s for s in sim[1]], 1)) / 2
    t2i = (xent([100 * sim[0][0], 100 * sim[1][0]], 0) + xent([100 * sim[0][1], 100 * sim[1][1]], 1)) / 2
    assert loss.terms["global"].item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_sentence_infonce_counts_only_real_sentences_of_each_report():
    sentences = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])     # third slot is padding
    contexts = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [7.0, 1.0]]])
    mask = torch.tensor([[True, True, False]])

    loss = sentence_infonce(sentences, contexts, mask, torch.tensor(2.0))

    # c→s logits 2·[[1, 0], [1, 0]] (row = context); s→c 2·[[1, 1], [0, 0]] (row = sentence)
    c2s = (xent([2.0, 0.0], 0) + xent([2.0, 0.0], 1)) / 2
    s2c = (xent([2.0, 2.0], 0) + xent([0.0, 0.0], 1)) / 2
    assert loss.item() == pytest.approx((c2s + s2c) / 2, rel=1e-6)


def test_simsiam_with_an_identity_predictor_is_minus_the_mean_cosine():
    patches = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    contexts = torch.tensor([[[1.0, 1.0], [0.0, 3.0]]])

    loss = simsiam(patches, contexts, torch.nn.Identity())

    cosines = [1 / math.sqrt(2), 1.0]
    assert loss.item() == pytest.approx(-sum(cosines) / 2, rel=1e-6)


def test_bank_loss_is_the_mean_absolute_error_over_real_sentences():
    sentences = torch.tensor([[[1.0, 2.0], [3.0, 3.0]]])
    prototypes = torch.tensor([[[1.5, 1.0], [9.0, 9.0]]])
    view = bank_view(sentences, torch.tensor([[True, False]]), torch.eye(2), prototypes=prototypes)

    out = SentencePrototypes(SentencePrototypesConfig(), dims(2))(Features(extras={"prototype_bank": view}), CTX)

    assert out.terms["reconstruction"].item() == pytest.approx((0.5 + 1.0) / 2)
    assert out.metrics["used"].item() == 1


def test_hungarian_matching_recovers_a_known_permutation():
    generator = torch.Generator().manual_seed(0)
    generated = torch.randn(2, 5, 8, generator=generator)
    order = torch.tensor([[3, 0, 4], [1, 2, 0]])                          # target j = generated[order[j]]
    targets = torch.stack([g[o] for g, o in zip(generated, order)]) + 0.01 * torch.randn(2, 3, 8, generator=generator)
    targets = torch.cat([targets, torch.zeros(2, 2, 8)], 1)               # two padded slots each
    valid = torch.tensor([[True] * 3 + [False] * 2] * 2)

    matched = hungarian(torch.cdist(generated, targets, p=1).numpy(), valid.numpy())

    assert matched[:, :3].tolist() == order.tolist()
    assert (matched[:, 3:] == -1).all()


def generation_inputs(valid_rows=(3, 2)):
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(6, 4, generator=generator)
    sentences = torch.randn(2, 3, 4, generator=generator)
    mask = torch.tensor([[i < n for i in range(3)] for n in valid_rows])
    return bank, sentences * mask[..., None], mask


def test_generation_l1_and_kl_equal_their_formulas_on_the_matched_pairs():
    bank, sentences, mask = generation_inputs()
    view = bank_view(sentences, mask, bank)
    objective = PrototypeGeneration(PrototypeGenerationConfig(num_queries=3, num_layers=1, num_heads=1, dropout=0.0,
                                                              l1_weight=1.0, kl_weight=1.0), dims(4))
    generated = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
    objective.generate = lambda tokens: generated
    objective.fixed_assignment = np.array([[2, 0, 1], [1, 2, -1]])
    features = Features(image_tokens=torch.zeros(2, 4, 4), text_global=torch.randn(2, 4),
                        extras={"prototype_bank": view})

    out = objective(features, CTX)

    pairs = [(0, 0, 2), (0, 1, 0), (0, 2, 1), (1, 0, 1), (1, 1, 2)]      # (report, target slot, query)
    l1 = sum((generated[b, q] - view.prototypes[b, j]).abs().mean() for b, j, q in pairs) / 5
    kl = sum(F.kl_div((generated[b, q] @ bank.t()).log_softmax(-1), (sentences[b, j] @ bank.t()).log_softmax(-1),
                      reduction="sum", log_target=True) for b, j, q in pairs) / 5
    assert out.terms["l1"].item() == pytest.approx(l1.item(), rel=1e-5)
    assert out.terms["kl"].item() == pytest.approx(kl.item(), rel=1e-5)


def test_feature_maps_are_built_in_spatial_order_and_patches_row_major():
    tokens = torch.arange(8.0).reshape(1, 4, 2)             # 2×2 grid, token t = (2t, 2t+1)
    images = torch.arange(16.0).reshape(1, 1, 4, 4)

    spatial = tokens_to_map(tokens, 2, official_view=False)
    patches = patchify(images, 2)

    assert spatial[0, 0].tolist() == [[0.0, 2.0], [4.0, 6.0]]            # channel 0 of tokens 0..3
    assert patches[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]                # top-right 2×2 patch


def test_clip_loss_does_not_depend_on_the_order_of_the_batch():
    image = F.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    permutation = torch.tensor([2, 0, 3, 1])

    assert clip_loss(image, image, torch.tensor(10.0)).item() == pytest.approx(
        clip_loss(image[permutation], image[permutation], torch.tensor(10.0)).item(), rel=1e-6)
