"""MGCA's three objectives (ITA, CTA, CPA) as a specification: finiteness, where gradients
go, padding invariance, Sinkhorn marginals, what ``official_quirks`` changes, and that two
ranks equal one process on the concatenated batch."""
from __future__ import annotations

import dataclasses
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import two_ranks
from kgvlp_tiny import make_batch, make_model
from kgvlp.models.features import Features
from kgvlp.objectives.base import ModelDims, StepContext
from kgvlp.modules.mgca_words import WordSlots
from kgvlp.modules.sinkhorn import sinkhorn
from kgvlp.objectives.cpa import CPAConfig
from kgvlp.objectives.cta import CTA, CTAConfig, attend, clipped_weights, weighted_symmetric_ce
from kgvlp.objectives.ita import ITA, ITAConfig

AFTER_FREEZE = StepContext(step=10, epoch=1.0)
DURING_FREEZE = StepContext(step=0, epoch=0.5)


# ---------------------------------------------------------------------------------------
# helpers


def all_mgca():
    return {"ita": ITAConfig(), "cta": CTAConfig(), "cpa": CPAConfig(num_prototypes=16)}


def gradient_groups(model) -> dict[str, bool]:
    """For each top-level part of the model: did any of its parameters get a non-zero grad?"""
    groups = {"image_encoder": model.image_encoder, "text_encoder": model.text_encoder,
              "projections": model.projections}
    groups.update({f"objectives.{n}": m for n, m in model.objectives.objectives.items()
                   if any(True for _ in m.parameters())})   # ITA owns no parameters
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
            for name, module in groups.items()}


def run_one_objective(name, tokenizer, reports, ctx=AFTER_FREEZE):
    """Full tiny model with all three objectives; backward through ``name`` only."""
    model = make_model(all_mgca())
    batch = make_batch(tokenizer, reports)
    features = model.encode(batch)
    out = model.objectives.objectives[name](features, ctx)
    loss = sum(out.terms.values())
    loss.backward()
    return model, out, loss


def synthetic_features(batch=3, patches=9, words=7, width=16, padded_words=(0, 2, 4), seed=0):
    """Random encoder outputs for CTA; row b has its last ``padded_words[b]`` slots empty."""
    generator = torch.Generator().manual_seed(seed)
    word_mask = torch.ones(batch, words, dtype=torch.bool)
    for row, padded in enumerate(padded_words[:batch]):
        if padded:
            word_mask[row, -padded:] = False
    word_tokens = torch.randn(batch, words, width, generator=generator) * word_mask[..., None]
    word_weights = torch.rand(batch, words, generator=generator) * word_mask
    return with_official_slots(Features(
        image_tokens=torch.randn(batch, patches, width, generator=generator),
        patch_weights=torch.rand(batch, patches, generator=generator).softmax(-1),
        word_tokens=word_tokens, word_mask=word_mask, word_weights=word_weights))


def with_official_slots(features: Features) -> Features:
    """The same words also as the official slots CTA reads under quirks (no [SEP], no shift):
    these tests isolate the quirks that act after the merge; tests/mgca_parity covers it."""
    slots = WordSlots(tokens=features.word_tokens, weights=features.word_weights, mask=features.word_mask)
    return dataclasses.replace(features, extras={**features.extras, "mgca_words": slots})


def pad_word_slots(features: Features, extra: int) -> Features:
    """The same reports with ``extra`` more empty word slots (a longer padded length)."""
    batch, _, width = features.word_tokens.shape
    return with_official_slots(dataclasses.replace(
        features,
        word_tokens=torch.cat([features.word_tokens, torch.zeros(batch, extra, width)], 1),
        word_mask=torch.cat([features.word_mask, torch.zeros(batch, extra, dtype=torch.bool)], 1),
        word_weights=torch.cat([features.word_weights, torch.zeros(batch, extra)], 1)))


def make_cta(quirks=False, width=16, seed=0, image_family="vit") -> CTA:
    torch.manual_seed(seed)
    dims = ModelDims(image_width=width, image_token_width=width, text_width=width,
                     num_image_tokens=9, max_length=9, image_family=image_family)
    return CTA(CTAConfig(hidden_dim=32, official_quirks=quirks), dims)


embeddings, make_cpa = two_ranks.embeddings, two_ranks.make_cpa


# ---------------------------------------------------------------------------------------
# 1. finite, and gradients reach exactly the right modules


def test_ita_is_finite_and_trains_encoders_and_projections_only(tokenizer, reports):
    model, _, loss = run_one_objective("ita", tokenizer, reports)

    assert torch.isfinite(loss)
    assert gradient_groups(model) == {"image_encoder": True, "text_encoder": True, "projections": True,
                                      "objectives.cta": False, "objectives.cpa": False}


def test_cta_is_finite_and_trains_encoders_and_its_own_heads_only(tokenizer, reports):
    model, out, _ = run_one_objective("cta", tokenizer, reports)

    assert set(out.terms) == {"word", "patch"}
    assert all(torch.isfinite(v) for v in out.terms.values())
    assert gradient_groups(model) == {"image_encoder": True, "text_encoder": True, "projections": False,
                                      "objectives.cta": True, "objectives.cpa": False}


def test_cta_token_weights_are_constants_of_the_loss():
    features = synthetic_features()
    features.patch_weights.requires_grad_(True)
    features.word_weights.requires_grad_(True)

    loss = sum(make_cta()(features, AFTER_FREEZE).terms.values())
    loss.backward()

    assert features.patch_weights.grad is None and features.word_weights.grad is None


def test_cpa_after_the_freeze_epoch_trains_encoders_projections_and_prototypes(tokenizer, reports):
    model, _, loss = run_one_objective("cpa", tokenizer, reports, ctx=AFTER_FREEZE)

    assert torch.isfinite(loss)
    assert gradient_groups(model) == {"image_encoder": True, "text_encoder": True, "projections": True,
                                      "objectives.cta": False, "objectives.cpa": True}


def test_cpa_during_the_freeze_epoch_gives_prototypes_a_zero_gradient(tokenizer, reports):
    model, _, _ = run_one_objective("cpa", tokenizer, reports, ctx=DURING_FREEZE)
    prototypes = model.objectives.objectives["cpa"].prototypes.weight

    assert prototypes.grad is not None and torch.count_nonzero(prototypes.grad) == 0
    assert gradient_groups(model)["projections"]


# ---------------------------------------------------------------------------------------
# 2. padding changes no CTA value


@pytest.mark.parametrize("head_mode", ["train", "eval"])
def test_cta_loss_does_not_depend_on_the_padded_length(tokenizer, reports, head_mode):
    short_reports = [sentences[:1] for sentences in reports]  # fit in 32 tokens, so padded
    losses = []
    state = None
    for max_length in (32, 48):
        model = make_model({"cta": CTAConfig()}, max_length=max_length)
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)  # identical weights; only W = max_length - 2 differs
        model.eval()                  # deterministic encoders (no dropout)
        model.objectives.train(head_mode == "train")  # train: masked BatchNorm statistics
        batch = make_batch(tokenizer, short_reports, max_length=max_length)
        assert (batch.attention_mask == 0).any(dim=1).all()
        out = model.objectives.objectives["cta"](model.encode(batch), AFTER_FREEZE)
        losses.append(out.terms)

    for term in ("word", "patch"):
        assert losses[0][term].item() == pytest.approx(losses[1][term].item(), abs=1e-6)


# ---------------------------------------------------------------------------------------
# 3. Sinkhorn


def sinkhorn_reference(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """MGCA eq. 8 / SwAV, float64, from the formula: Q = exp(Sᵀ/ε) normalised to total mass 1,
    then alternately rows (prototypes) rescaled to 1/K and columns (samples) to 1/N; codes = N·Qᵀ."""
    q = torch.exp(scores.double().t() / epsilon)
    q = q / q.sum()
    num_prototypes, num_samples = q.shape
    for _ in range(iterations):
        q = q / (q.sum(dim=1, keepdim=True) * num_prototypes)
        q = q / (q.sum(dim=0, keepdim=True) * num_samples)
    return (q * num_samples).t()


def test_sinkhorn_codes_have_the_equal_partition_marginals():
    image, _ = embeddings(rows=12)
    scores = image @ F.normalize(torch.randn(6, 128), dim=1).t()   # N = 12, K = 6

    codes = sinkhorn(scores, epsilon=0.05, iterations=200)

    torch.testing.assert_close(codes.sum(dim=1), torch.ones(12))               # each sample: 1
    torch.testing.assert_close(codes.sum(dim=0), torch.full((6,), 12 / 6))     # each prototype: N/K


def test_sinkhorn_with_three_iterations_matches_a_float64_reference():
    image, _ = embeddings(rows=10)
    scores = image @ F.normalize(torch.randn(7, 128), dim=1).t()

    codes = sinkhorn(scores, epsilon=0.05, iterations=3)

    torch.testing.assert_close(codes.double(), sinkhorn_reference(scores, 0.05, 3), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(10))   # rows are exact after any count


# ---------------------------------------------------------------------------------------
# 4. official_quirks differs from the default exactly where documented


def test_ita_quirk_sums_the_two_directions_instead_of_averaging():
    image, text = embeddings()
    features = Features(image_embed=image, text_embed=text)
    dims = ModelDims(8, 8, 8, 4, 8)

    default = ITA(ITAConfig(), dims)(features, AFTER_FREEZE).terms["ita"]
    quirk = ITA(ITAConfig(official_quirks=True), dims)(features, AFTER_FREEZE).terms["ita"]

    assert quirk.item() == pytest.approx(2 * default.item(), rel=1e-6)


def test_cta_quirks_change_nothing_on_the_word_side_when_no_slot_is_padding():
    features = synthetic_features(padded_words=(0, 0, 0))

    default = make_cta(quirks=False)(features, AFTER_FREEZE).terms
    quirk = make_cta(quirks=True)(features, AFTER_FREEZE).terms

    assert quirk["word"].item() == pytest.approx(default["word"].item(), abs=1e-5)
    assert quirk["patch"].item() != pytest.approx(default["patch"].item(), abs=1e-4)


def test_cta_quirk_patch_side_is_the_default_without_renormalising_the_word_context():
    features = synthetic_features()
    cta = make_cta(quirks=True).eval()   # eval: BatchNorm statistics play no part
    patches = cta.image_head(features.image_tokens)
    words = cta.word_head(features.word_tokens)
    weights = clipped_weights(features.patch_weights, torch.ones_like(features.patch_weights, dtype=torch.bool),
                              0.1, 0.9)
    unnormalised = attend(patches, words, 0.1, features.word_mask)
    expected = weighted_symmetric_ce(patches, unnormalised, weights, 0.1, None)
    renormalised = weighted_symmetric_ce(patches, F.normalize(unnormalised, dim=-1), weights, 0.1, None)

    quirk = cta(features, AFTER_FREEZE).terms["patch"]
    default = make_cta(quirks=False).eval()(features, AFTER_FREEZE).terms["patch"]

    assert quirk.item() == pytest.approx(expected.item(), abs=1e-6)
    assert default.item() == pytest.approx(renormalised.item(), abs=1e-6)


def test_cta_quirk_on_a_cnn_renormalises_the_word_context_as_the_official_resnet_branch():
    features = synthetic_features()
    cta = make_cta(quirks=True, image_family="cnn").eval()
    patches, words = cta.image_head(features.image_tokens), cta.word_head(features.word_tokens)
    weights = clipped_weights(features.patch_weights, torch.ones_like(features.patch_weights, dtype=torch.bool),
                              0.1, 0.9)
    renormalised = F.normalize(attend(patches, words, 0.1, features.word_mask), dim=-1)

    quirk = cta(features, AFTER_FREEZE).terms["patch"]

    assert quirk.item() == pytest.approx(weighted_symmetric_ce(patches, renormalised, weights, 0.1, None).item(),
                                         abs=1e-6)


def test_cta_quirk_lets_padding_slots_act_as_word_side_negatives():
    features = synthetic_features(padded_words=(0, 2, 4))
    # eval: the heads' BatchNorm uses running statistics, so only the negatives differ
    quirk_cta, default_cta = make_cta(quirks=True).eval(), make_cta(quirks=False).eval()
    words = quirk_cta.word_head(features.word_tokens)
    context = F.normalize(attend(words, quirk_cta.image_head(features.image_tokens), 0.1, None), dim=-1)
    weights = clipped_weights(features.word_weights, features.word_mask, 0.1, 0.9)

    quirk = quirk_cta(features, AFTER_FREEZE).terms["word"]
    default = default_cta(features, AFTER_FREEZE).terms["word"]

    assert quirk.item() == pytest.approx(weighted_symmetric_ce(words, context, weights, 0.1, None).item(), abs=1e-6)
    assert default.item() == pytest.approx(
        weighted_symmetric_ce(words, context, weights, 0.1, features.word_mask).item(), abs=1e-6)
    assert quirk.item() != pytest.approx(default.item(), abs=1e-4)


def test_cta_quirk_batchnorm_over_padded_slots_makes_the_loss_depend_on_padded_length():
    features = synthetic_features(padded_words=(0, 2, 4))
    longer = pad_word_slots(features, extra=5)

    default = [make_cta(quirks=False)(f, AFTER_FREEZE).terms["word"] for f in (features, longer)]
    quirk = [make_cta(quirks=True)(f, AFTER_FREEZE).terms["word"] for f in (features, longer)]

    assert default[0].item() == pytest.approx(default[1].item(), abs=1e-6)
    assert quirk[0].item() != pytest.approx(quirk[1].item(), abs=1e-4)


def test_cpa_quirk_without_max_subtraction_gives_the_same_loss_when_nothing_overflows():
    image, text = embeddings()
    features = Features(image_embed=image, text_embed=text)

    default = make_cpa(quirks=False)(features, AFTER_FREEZE).terms["cpa"]
    quirk = make_cpa(quirks=True)(features, AFTER_FREEZE).terms["cpa"]

    assert quirk.item() == pytest.approx(default.item(), abs=1e-6)


def test_cpa_quirk_rounds_the_codes_to_float32_as_the_official_sinkhorn_returns_them():
    image, text = embeddings()
    image, text = image.double(), text.double()
    default, quirk = make_cpa(quirks=False).double(), make_cpa(quirks=True).double()

    scores = image @ quirk.prototypes.weight.t()

    assert default._codes(scores).dtype == torch.float64
    assert quirk._codes(scores).dtype == torch.float32
    torch.testing.assert_close(quirk._codes(scores), default._codes(scores).float(), atol=1e-6, rtol=0)


def test_sinkhorn_without_max_subtraction_overflows_where_the_default_does_not():
    scores = torch.tensor([[5.0, 0.0], [0.0, 5.0]])   # 5 / ε = 100 > log(float32 max) ≈ 88.7

    assert torch.isfinite(sinkhorn(scores, 0.05, 3, stable=True)).all()
    assert not torch.isfinite(sinkhorn(scores, 0.05, 3, stable=False)).all()


# ---------------------------------------------------------------------------------------
# 5. two ranks equal one process on the concatenated batch (worker: tests/two_ranks.py)


def single_process_reference(name, image, text):
    image, text = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    objective = two_ranks.make_objective(name)
    loss = sum(objective(Features(image_embed=image, text_embed=text), AFTER_FREEZE).terms.values())
    loss.backward()
    prototype_grad = objective.prototypes.weight.grad if name == "cpa" else None
    return {"loss": loss.detach(), "image_grad": image.grad, "text_grad": text.grad,
            "prototype_grad": prototype_grad}


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    """Both objectives on 2 gloo ranks, each rank holding half of the same 8 embeddings."""
    image, text = embeddings(rows=8)
    out_dir = tmp_path_factory.mktemp("two_ranks")
    mp.spawn(two_ranks.worker, args=(two_ranks.free_port(), image, text, str(out_dir)), nprocs=2, join=True)
    return image, text, [torch.load(out_dir / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize("name", ["ita", "cpa"])
def test_two_ranks_equal_one_process_on_the_concatenated_batch(name, two_rank_results):
    image, text, per_rank = two_rank_results
    expected = single_process_reference(name, image, text)

    for rank, results in enumerate(per_rank):
        got, rows = results[name], slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(got["loss"], expected["loss"], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["image_grad"], expected["image_grad"][rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(got["text_grad"], expected["text_grad"][rows], atol=1e-5, rtol=0)
        if name == "cpa":
            torch.testing.assert_close(got["prototype_grad"], expected["prototype_grad"], atol=1e-5, rtol=0)


def test_ita_quirk_on_two_ranks_uses_only_each_ranks_own_negatives(two_rank_results):
    image, text, per_rank = two_rank_results
    quirk = ITA(ITAConfig(official_quirks=True), ModelDims(8, 8, 8, 4, 8))

    for rank, results in enumerate(per_rank):
        rows = slice(rank * 4, (rank + 1) * 4)
        own_half = quirk(Features(image_embed=image[rows], text_embed=text[rows]), AFTER_FREEZE)
        torch.testing.assert_close(results["ita_quirk"]["rank_loss"], own_half.terms["ita"], atol=1e-6, rtol=0)
