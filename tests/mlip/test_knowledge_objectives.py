"""The knowledge rules: negated concepts are never TKP positives, identical concept sets are
never negatives in category_contrast, ITM never draws the positive or a same-findings
report, text_swap labels are exactly the swapped sentences."""
from __future__ import annotations

import pytest
import torch

from mlip.helpers import make_batch, make_model
from kgvlp.models.features import Need
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.base import StepContext
from kgvlp.objectives.itm import ITMConfig, same_findings, sample_hard_negatives
from kgvlp.modules.pooling import sentence_means
from kgvlp.objectives.text_swap import swap_sentences
from kgvlp.objectives.tkp_alignment import TKPConfig

CTX = StepContext(step=5, epoch=1.0, max_steps=10)


@pytest.fixture(scope="module")
def model(bank_dir):
    configs = {"tkp_alignment": TKPConfig(negated_as_negatives=False),
               "category_contrast": REGISTRY["category_contrast"].Config(jaccard_threshold=1.0),
               "itm": ITMConfig(), "text_swap": REGISTRY["text_swap"].Config()}
    return make_model(bank_dir, configs)


@pytest.fixture(scope="module")
def encoded(model, tokenizer):
    batch = make_batch(tokenizer)
    return batch, model.encode(batch)


def test_a_negated_concept_never_enters_tkp_as_a_positive(model, encoded):
    batch, features = encoded
    entities = features.extras[Need.ENTITIES.value]
    vectors = entities.vectors.detach().clone().requires_grad_(True)
    entities_with_leaf = type(entities)(**{**entities.__dict__, "vectors": vectors})
    features.extras[Need.ENTITIES.value] = entities_with_leaf
    try:
        out = model.objectives.objectives["tkp_alignment"](features, CTX)
        out.terms["tkp"].backward()
    finally:
        features.extras[Need.ENTITIES.value] = entities
    negated = entities.valid & entities.negated

    assert negated.any() and out.metrics["anchors"] == (entities.valid & ~entities.negated).sum()
    assert vectors.grad[negated].abs().sum() == 0           # negated instances play no part
    assert vectors.grad[entities.valid & ~entities.negated].abs().sum() > 0


def test_identical_concept_sets_are_never_negatives_in_category_contrast(model, encoded):
    batch, features = encoded
    objective = model.objectives.objectives["category_contrast"]
    entities = features.extras[Need.ENTITIES.value]
    text = features.text_embed.detach().clone().requires_grad_(True)

    image_rows, _, similar = objective.instance_rows(features.image_embed.detach(), text, entities)
    image_rows[0].backward()        # image 0's loss; reports 0 and 3 state the same findings

    assert similar[0, 3] and similar[3, 0] and similar[1, 5]     # 1 and 5: both no finding
    assert text.grad[3].abs().sum() == 0 and text.grad[2].abs().sum() > 0


def test_category_soft_mode_gives_identical_sets_positive_targets(bank_dir, tokenizer):
    config = REGISTRY["category_contrast"].Config(false_negatives="soft", jaccard_threshold=1.0)
    model = make_model(bank_dir, {"category_contrast": config})
    batch = make_batch(tokenizer)
    features = model.encode(batch)
    text = features.text_embed.detach().clone().requires_grad_(True)
    objective = model.objectives.objectives["category_contrast"]
    image_rows, _, _ = objective.instance_rows(features.image_embed.detach(), text, features.extras["entities"])
    image_rows[0].backward()

    # a soft positive is pulled towards (gradient of the loss points away from the image)
    assert (text.grad[3] @ features.image_embed[0].detach()) < 0


def test_itm_never_draws_the_positive_or_a_same_findings_report(model, encoded):
    batch, features = encoded
    forbidden = same_findings("entities", features, threshold=1.0)
    similarity = features.image_embed @ features.text_embed.t()
    # make forbidden pairs the most similar, the strongest temptation
    similarity = similarity + 10.0 * forbidden
    generator = torch.Generator().manual_seed(0)

    assert forbidden[0, 3] and forbidden[1, 5] and not forbidden[0, 1]
    for _ in range(200):
        negatives, found = sample_hard_negatives(similarity, forbidden, generator, temperature=0.07)
        assert found.all()
        assert not forbidden[torch.arange(8), negatives].any()


def test_itm_rows_without_admissible_negatives_are_flagged():
    forbidden = torch.tensor([[True, True], [True, False]])
    _, found = sample_hard_negatives(torch.zeros(2, 2), forbidden, torch.Generator().manual_seed(0), 1.0)

    assert found.tolist() == [False, True]


def test_text_swap_labels_mark_exactly_the_swapped_sentences():
    generator = torch.Generator().manual_seed(0)
    sentences = torch.arange(4 * 5, dtype=torch.float).reshape(4, 5, 1).expand(4, 5, 3).clone()
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    allowed = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]).bool()

    swapped, labels, donor = swap_sentences(sentences, valid, allowed, ratio=0.5, generator=generator)

    changed = (swapped != sentences).any(-1)
    assert torch.equal(labels.bool(), changed)                      # labels = what changed
    assert not (labels.bool() & ~valid).any()                       # never on padding
    assert donor.tolist()[:3] == [1, 0, 3] and donor[3] == -1 and labels[3].sum() == 0
    for b in range(3):                                              # swapped in from the donor only
        donor_values = set(sentences[donor[b], valid[donor[b]], 0].tolist())
        assert set(swapped[b, labels[b].bool(), 0].tolist()) <= donor_values


def test_text_swap_ratio_one_swaps_every_real_sentence():
    sentences = torch.randn(2, 4, 3)
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    allowed = ~torch.eye(2, dtype=torch.bool)

    _, labels, _ = swap_sentences(sentences, valid, allowed, 1.0, torch.Generator().manual_seed(1))

    assert torch.equal(labels.bool(), valid)


def test_sentence_features_average_each_sentences_tokens():
    tokens = torch.tensor([[[1.0], [2.0], [4.0], [8.0]]])
    index = torch.tensor([[-1, 0, 0, 1]])

    means, valid = sentence_means(tokens, index, slots=3)

    assert means[0, :, 0].tolist() == [3.0, 8.0, 0.0] and valid.tolist() == [[True, True, False]]
