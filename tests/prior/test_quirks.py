"""``official_quirks: true`` differs from the default exactly where docs/prior.md says."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from kgvlp.config.schema import ImageEncoderConfig
from kgvlp.models.features import Features
from kgvlp.models.image import build_image_encoder
from kgvlp.objectives.base import StepContext
from kgvlp.objectives.masked_reconstruction import tokens_to_map
from kgvlp.objectives.prior_global import PriorGlobal, PriorGlobalConfig
from kgvlp.objectives.prior_local import PriorLocal, PriorLocalConfig
from kgvlp.objectives.masked_reconstruction import MaskedReconstruction, MaskedReconstructionConfig
from kgvlp.objectives.prototype_generation import PrototypeGeneration, PrototypeGenerationConfig
from kgvlp.objectives.shared import publish
from prior.helpers import bank_view, dims

CTX = StepContext(step=0)


@pytest.mark.parametrize("cls,config", [(PriorGlobal, PriorGlobalConfig), (PriorLocal, PriorLocalConfig)])
def test_only_the_default_clamps_the_learned_scale_at_100(cls, config):
    default, quirk = cls(config(), dims()), cls(config(official_quirks=True), dims())
    for objective in (default, quirk):
        objective.logit_scale.log_scale.data.fill_(math.log(500.0))
        objective.after_step(CTX)

    assert default.logit_scale().item() == pytest.approx(100.0, rel=1e-5)
    assert quirk.logit_scale().item() == pytest.approx(500.0, rel=1e-5)


def test_the_quirk_token_layout_is_the_views_reinterpretation_of_the_map():
    torch.manual_seed(0)
    default = build_image_encoder(ImageEncoderConfig(name="resnet_test", image_size=64, resnet_local_layer="layer4"))
    quirk = build_image_encoder(ImageEncoderConfig(name="resnet_test", image_size=64, resnet_local_layer="layer4",
                                                   resnet_token_layout="official_view"))
    quirk.load_state_dict(default.state_dict())
    default.eval(), quirk.eval()
    images = torch.randn(2, 1, 64, 64)

    tokens, scrambled = default(images).tokens, quirk(images).tokens

    feature_map = tokens_to_map(tokens, 2, official_view=False)               # back to (B, C, 2, 2)
    torch.testing.assert_close(scrambled, feature_map.reshape(2, 4, -1))
    assert not torch.allclose(scrambled, tokens)


def test_the_decoder_side_quirk_views_tokens_as_a_map_without_permuting():
    tokens = torch.arange(8.0).reshape(1, 4, 2)

    assert tokens_to_map(tokens, 2, official_view=True)[0, 0].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert tokens_to_map(tokens, 2, official_view=False)[0, 0].tolist() == [[0.0, 2.0], [4.0, 6.0]]


def make_generation(quirks: bool) -> PrototypeGeneration:
    torch.manual_seed(0)
    return PrototypeGeneration(PrototypeGenerationConfig(num_queries=3, num_layers=1, num_heads=1, dropout=0.0,
                                                         official_quirks=quirks), dims(4)).eval()


def test_the_quirk_decoder_is_causal_so_the_first_query_ignores_the_others():
    default, quirk = make_generation(False), make_generation(True)
    tokens = torch.randn(1, 4, 4)
    for objective in (default, quirk):
        first = objective.generate(tokens)[0, 0].clone()
        objective.queries.data[0, 1:] += 1.0
        objective.first_changed = not torch.allclose(objective.generate(tokens)[0, 0], first)

    assert default.first_changed and not quirk.first_changed


def generation_case(quirks: bool):
    """Report 0 with 2 of 3 slots real; generated prototypes = the targets in order (1, 2, 0)."""
    objective = make_generation(quirks)
    bank = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    sentences = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[True, True, False]])
    sentences = (sentences * mask[..., None]).requires_grad_(True)
    view = bank_view(sentences, mask, bank, prototypes=sentences * 1.0)
    targets = (sentences * mask[..., None]).detach()
    generated = targets[:, [1, 2, 0]] + 0.001                      # query q makes target order[q]
    objective.generate = lambda tokens: generated
    features = Features(image_tokens=torch.zeros(1, 4, 4), text_global=torch.randn(1, 4),
                        extras={"prototype_bank": view})
    if quirks:   # the quirk InfoNCE uses prior_global's scale, which prior_global publishes
        publish(features, "prior_global", "logit_scale", torch.tensor(100.0))
    return objective, features, sentences, generated, targets


def test_default_matching_pairs_each_real_target_with_its_generated_prototype():
    objective, features, _, generated, targets = generation_case(False)

    out = objective(features, CTX)

    assert out.terms["l1"].item() == pytest.approx(0.001, abs=1e-6)


def test_quirk_inverts_the_permutation_and_counts_padded_slots_in_the_l1():
    objective, features, _, generated, targets = generation_case(True)

    out = objective(features, CTX)

    # code: cost over all 3 slots (padded slot = 0), pairs = generated[col_ind] (inverted)
    cost = torch.cdist(generated[0], targets[0], p=1).numpy()
    from scipy.optimize import linear_sum_assignment
    col = linear_sum_assignment(cost)[1]
    expected = (generated[0, col] - targets[0]).abs().mean()
    assert col.tolist() == [1, 2, 0]     # query q ↔ target col[q]; the right pairs are generated[argsort(col)]
    assert out.terms["l1"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.terms["l1"].item() > 0.1


@pytest.mark.parametrize("quirks", [False, True])
def test_only_the_quirk_kl_trains_the_side_that_made_its_target(quirks):
    objective, features, sentences, _, _ = generation_case(quirks)
    objective.fixed_assignment = np.array([[2, 0, -1]])

    kl = objective(features, CTX).terms["kl"]

    assert kl.requires_grad == quirks            # the generated side is a constant here
    if quirks:
        kl.backward()
        assert sentences.grad.abs().sum() > 0


def test_only_a_quirk_bank_cuts_what_its_readers_see_and_only_in_the_cut_stages():
    sentences, mask = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    view = bank_view(sentences, mask, torch.randn(6, 4))
    quirk = dataclasses.replace(view, cut_stages=("stage3",), cut_to=3)

    assert view.for_stage("stage3") is view                 # default: nobody else cuts
    assert quirk.for_stage("stage2") is quirk
    cut = quirk.for_stage("stage3")
    assert cut.prototypes.shape == (2, 3, 4) and cut.mask.shape == (2, 3) and cut.assignment.shape == (2, 3, 6)
    torch.testing.assert_close(cut.sentences, sentences[:, :3])


def test_a_quirk_banks_usage_counters_count_only_the_cut_slots_in_the_cut_stages():
    """The counters (kgvlp's; the code has none) count what the bank's readers saw."""
    from types import SimpleNamespace

    from kgvlp.modules.registry import SERVICES
    service = SERVICES["sentence_bank"]
    bank = service(service.Config(size=6, official_quirks=True, cut_stages=["stage3"], cut_to=3),
                   SimpleNamespace(dims=SimpleNamespace(text_width=4)))
    sentences, mask = torch.randn(1, 5, 4), torch.ones(1, 5, dtype=torch.bool)
    # sentence slot i picks prototype i; prototype 5 is picked by nobody
    view = dataclasses.replace(bank_view(sentences, mask, torch.randn(6, 4)), cut_stages=("stage3",), cut_to=3,
                               assignment=torch.eye(6)[:5][None])
    idle = {}
    for stage in ("stage2", "stage3"):
        bank.idle_steps.zero_()
        bank.complete(None, None, view)
        bank.after_step(None, StepContext(step=0, epoch=0.0, stage=stage))
        idle[stage] = bank.idle_steps.tolist()

    assert idle == {"stage2": [0, 0, 0, 0, 0, 1], "stage3": [0, 0, 0, 1, 1, 1]}


def reconstruction(quirks: bool) -> MaskedReconstruction:
    torch.manual_seed(0)
    return MaskedReconstruction(MaskedReconstructionConfig(official_quirks=quirks), dims(4, tokens=4, slots=3)).eval()


def reconstruction_features() -> Features:
    return Features(image_tokens=torch.randn(1, 4, 4), sentences=torch.randn(1, 3, 4),
                    sentence_mask=torch.ones(1, 3, dtype=torch.bool), images=torch.randn(1, 1, 8, 8))


def test_the_quirk_reconstruction_is_conditioned_on_prior_locals_patch_contexts():
    default, quirk = reconstruction(False), reconstruction(True)
    features = reconstruction_features()
    contexts = torch.randn(1, 4, 4, requires_grad=True)
    publish(features, "prior_local", "patch_context", contexts)

    quirk(features, CTX).terms["image"].backward()

    assert contexts.grad.abs().sum() > 0                      # the code trains prior_local's attention
    assert hasattr(default, "conditioning") and not hasattr(quirk, "conditioning")
    with pytest.raises(ValueError, match="prior_local"):
        quirk(reconstruction_features(), CTX)


def test_the_quirk_generation_contrasts_the_pooled_prototypes_with_prior_globals_scale():
    default_objective, default_features, *_ = generation_case(False)
    objective, features, *_ = generation_case(True)
    shared = torch.tensor(100.0, requires_grad=True)
    publish(features, "prior_global", "logit_scale", shared)
    features.text_global = None                               # the quirk does not read it

    objective(features, CTX).terms["contrast"].backward()

    assert shared.grad is not None and objective.logit_scale is None
    assert default_objective.logit_scale is not None
    with pytest.raises(ValueError, match="prior_global"):
        objective(Features(image_tokens=features.image_tokens, extras={"prototype_bank": features.extras[
            "prototype_bank"]}), CTX)


def test_the_quirk_decoder_embeds_the_queries_as_bert_with_berts_layer_norm_eps():
    default, quirk = make_generation(False), make_generation(True)
    norms = [m.eps for m in quirk.decoder.modules() if isinstance(m, torch.nn.LayerNorm)]

    assert default.embeddings is None and all(m.eps == 1e-5 for m in default.decoder.modules()
                                              if isinstance(m, torch.nn.LayerNorm))
    assert norms and set(norms) == {1e-12} and quirk.embeddings.norm.eps == 1e-12
    assert isinstance(quirk.decoder.layers[0].dropout, torch.nn.Identity)   # BERT: none inside the FFN
    queries = quirk.queries[0]
    expected = torch.nn.functional.layer_norm(queries + quirk.embeddings.token_type + quirk.embeddings.position,
                                              (4,), quirk.embeddings.norm.weight, quirk.embeddings.norm.bias, 1e-12)
    torch.testing.assert_close(quirk.embeddings(quirk.queries)[0], expected)


@pytest.mark.parametrize("reader,owner", [("prototype_generation", "prior_global"),
                                          ("masked_reconstruction", "prior_local")])
def test_a_quirk_reader_listed_before_the_objective_it_reads_fails_when_built(reader, owner):
    from kgvlp.objectives import REGISTRY
    from kgvlp.objectives.objective_set import ObjectiveSet
    configs = {reader: REGISTRY[reader].Config(official_quirks=True), owner: REGISTRY[owner].Config()}
    if reader == "prototype_generation":
        configs[reader].num_queries, configs[reader].num_layers, configs[reader].num_heads = 3, 1, 1

    with pytest.raises(ValueError, match=f"{reader}.official_quirks.*list it before {reader}"):
        ObjectiveSet(configs, REGISTRY, dims(4, tokens=4, slots=3))
    ObjectiveSet(dict(reversed(list(configs.items()))), REGISTRY, dims(4, tokens=4, slots=3))   # owner first


def test_the_quirk_decoder_is_initialised_as_bert_and_the_default_as_torch():
    """The code's generator is a BertModel (every projection N(0, 0.02), zero bias); kgvlp's
    nn.TransformerDecoder keeps torch's init unless official_quirks asks for BERT's."""
    torch.manual_seed(0)
    quirk = PrototypeGeneration(PrototypeGenerationConfig(official_quirks=True, num_layers=2, num_heads=4), dims(width=64))
    torch.manual_seed(0)
    default = PrototypeGeneration(PrototypeGenerationConfig(num_layers=2, num_heads=4), dims(width=64))

    def projections(objective):
        return [m for m in objective.decoder.modules() if isinstance(m, torch.nn.Linear)]

    for linear in projections(quirk):
        assert float(linear.weight.detach().std()) == pytest.approx(0.02, rel=0.15)
        assert float(linear.bias.detach().abs().max()) == 0.0
    attention = quirk.decoder.layers[0].self_attn
    assert float(attention.in_proj_weight.detach().std()) == pytest.approx(0.02, rel=0.15)
    assert float(attention.in_proj_bias.detach().abs().max()) == 0.0
    # torch's Kaiming-uniform on the feed-forward's first layer: std 1/sqrt(3 * fan_in)
    first = default.decoder.layers[0].linear1
    assert float(first.weight.detach().std()) == pytest.approx(1 / math.sqrt(3 * first.in_features), rel=0.15)
