"""kgvlp with ``official_quirks: true`` equals the official MGCA code (@680fe4a), end to end
from token-level encoder outputs: every term, gradient and intermediate to 1e-8 in float64.

The fixtures are the official code's numbers (tools/parity_mgca.py; the code itself is never
committed): ViT and ResNet branches, batches of 5 and 7, reports with word pieces, a full
report and pad slots. kgvlp runs its own tokenisation, word merge (the ``mgca_words``
service), heads and objectives on them (tests/mgca_parity/harness.py)."""
from __future__ import annotations

import pytest
import torch

from mgca_parity.harness import load_case, manifest, run
from kgvlp.objectives.cta import attend, clipped_weights

TOLERANCE = 1e-8
CASES = manifest()["cases"]


def close(actual, expected, what):
    torch.testing.assert_close(actual.to(expected.dtype).reshape(expected.shape), expected,
                               atol=TOLERANCE, rtol=0, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module", params=CASES, ids=[c["name"] for c in CASES])
def case(request):
    fixture = load_case(request.param["name"])
    return fixture, run(request.param, fixture=fixture)


def test_kgvlp_tokenises_the_reports_into_the_fixture_token_ids(case):
    fixture, (*_, batch) = case

    assert torch.equal(batch.input_ids, fixture["input/input_ids"])
    assert torch.equal(batch.attention_mask, fixture["input/attention_mask"])


def test_every_term_equals_the_official_value(case):
    fixture, (terms, *_) = case

    for term, value in terms.items():
        close(value, fixture[f"term/{term}"], term)


def test_every_gradient_equals_the_official_gradient(case):
    fixture, (_, grads, *_) = case

    for term, by_name in grads.items():
        official = {k.split("/", 2)[2] for k in fixture if k.startswith(f"grad/{term}/")}
        assert set(by_name) == official, term          # the same inputs and parameters are reached
        for name, grad in by_name.items():
            close(grad, fixture[f"grad/{term}/{name}"], f"d{term}/d{name}")


def test_the_word_slots_and_encoder_features_equal_the_official_ones(case):
    fixture, (_, _, features, *_) = case
    slots = features.extras["mgca_words"]

    close(slots.tokens, fixture["mid/word_feat"], "word states")
    close(slots.weights, fixture["mid/word_attn_raw"], "word weights before clipping")
    assert torch.equal(~slots.mask, fixture["mid/pad_mask"])
    close(features.text_global, fixture["mid/report_feat"], "report vector")
    close(features.image_global, fixture["mid/image_feat"], "image vector")
    close(features.image_tokens, fixture["mid/patch_feat"], "patch tokens")
    close(features.image_embed, fixture["mid/image_embed"], "image embedding")
    close(features.text_embed, fixture["mid/text_embed"], "report embedding")


def test_the_cta_and_cpa_intermediates_equal_the_official_ones(case):
    fixture, (_, _, features, model, _) = case
    cta, cpa = model.objectives.objectives["cta"], model.objectives.objectives["cpa"]
    slots = features.extras["mgca_words"]
    with torch.no_grad():
        words, patches = cta.word_head(slots.tokens), cta.image_head(features.image_tokens)
        patch_valid = torch.ones_like(features.patch_weights, dtype=torch.bool)
        image_scores = features.image_embed @ cpa.prototypes.weight.t()
        text_scores = features.text_embed @ cpa.prototypes.weight.t()

    close(words, fixture["mid/word_embed"], "word embeddings")
    close(patches, fixture["mid/patch_embed"], "patch embeddings")
    close(clipped_weights(slots.weights, slots.weights > 0, 0.1, 0.9), fixture["mid/word_weights"], "word weights")
    close(clipped_weights(features.patch_weights, patch_valid, 0.1, 0.9), fixture["mid/patch_weights"],
          "patch weights")
    close(torch.nn.functional.normalize(attend(words, patches, 0.1, None), dim=-1), fixture["mid/word_context"],
          "word context")
    close(cpa.prototypes.weight, fixture["mid/prototypes_normalised"], "prototypes")
    close(image_scores, fixture["mid/image_scores"], "image prototype scores")
    assert cpa._codes(image_scores).dtype == fixture["mid/image_codes"].dtype == torch.float32
    close(cpa._codes(image_scores), fixture["mid/image_codes"], "image codes")
    close(cpa._codes(text_scores), fixture["mid/text_codes"], "report codes")
