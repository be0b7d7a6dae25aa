"""Every PRIOR term is finite and its gradient reaches exactly the modules it should."""
from __future__ import annotations

import pytest
import torch

from kgvlp.objectives.base import StepContext
from prior.helpers import make_prior_model, prior_batch

STAGE3 = StepContext(step=5, stage="stage3")


def gradient_groups(model) -> dict[str, bool]:
    groups = {"image_encoder": model.image_encoder, "text_encoder": model.text_encoder,
              "bank": model.services["sentence_bank"]}
    groups.update({n: m for n, m in model.objectives.objectives.items() if any(True for _ in m.parameters())})
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
            for name, module in groups.items()}


def backward_through(model, batch, name, ctx=STAGE3):
    model.zero_grad(set_to_none=True)
    features = model.encode(batch)
    out = model.objectives.objectives[name](features, ctx)
    loss = sum(out.terms.values())
    loss.backward()
    return out


@pytest.fixture(scope="module")
def resnet_batch(tokenizer, reports):
    return prior_batch(tokenizer, reports)


@pytest.fixture(scope="module")
def resnet_model():
    """One model for the routing tests (each starts from cleared gradients)."""
    return make_prior_model()


NONE = {"image_encoder": False, "text_encoder": False, "bank": False, "prior_global": False,
        "prior_local": False, "masked_reconstruction": False, "prototype_generation": False}
EXPECTED = {
    "prior_global": {"image_encoder": True, "text_encoder": True, "prior_global": True},
    "prior_local": {"image_encoder": True, "text_encoder": True, "prior_local": True},
    "sentence_prototypes": {"text_encoder": True, "bank": True},
    "masked_reconstruction": {"image_encoder": True, "text_encoder": True, "masked_reconstruction": True},
    "prototype_generation": {"image_encoder": True, "text_encoder": True, "bank": True,
                             "prototype_generation": True},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_term_is_finite_and_trains_exactly_its_modules(name, resnet_batch, resnet_model):
    out = backward_through(resnet_model, resnet_batch, name)

    assert out.terms and all(torch.isfinite(v) for v in out.terms.values())
    assert gradient_groups(resnet_model) == {**NONE, **EXPECTED[name]}


def test_in_prototype_stages_the_alignment_trains_the_bank_too(resnet_batch):
    model = make_prior_model(prior_local={"prototype_stages": ["stage2", "stage3"]})

    backward_through(model, resnet_batch, "prior_local", StepContext(step=3, stage="stage2"))

    assert gradient_groups(model)["bank"]


def test_patch_mask_reconstruction_on_a_vit_trains_the_encoders_and_its_decoder_only(tokenizer, reports):
    model = make_prior_model("vit_test", mode="patch_mask")
    batch = prior_batch(tokenizer, reports)

    out = backward_through(model, batch, "masked_reconstruction")

    assert set(out.terms) == {"patches"} and torch.isfinite(out.terms["patches"])
    assert gradient_groups(model) == {**NONE, "image_encoder": True, "text_encoder": True,
                                      "masked_reconstruction": True}


def test_patch_mask_on_a_cnn_fails_naming_feature_dropout():
    with pytest.raises(ValueError, match="feature_dropout"):
        make_prior_model("resnet_test", mode="patch_mask")


def test_on_encoders_of_different_widths_the_image_side_is_projected_to_the_text_width(tokenizer, reports):
    """PRIOR objectives compare image and text features directly: a 64-wide ViT beside the
    384-wide MiniLM with no projections configured gets PRIOR's Linear projections (to 384),
    and every PRIOR objective trains."""
    from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
    from kgvlp.models.vlp import VLPModel
    from kgvlp.modules.registry import SERVICES
    from kgvlp.objectives import REGISTRY
    from prior.helpers import prior_configs
    cfg = ModelConfig(image=ImageEncoderConfig(name="vit_test", image_size=64),
                      text=TextEncoderConfig(max_length=32, num_layers=2, dropout=0.0),
                      services={"sentence_bank": SERVICES["sentence_bank"].Config(size=16)})
    torch.manual_seed(0)
    model = VLPModel(cfg, prior_configs("patch_mask"), REGISTRY)
    assert model.dims.image_width == model.dims.image_token_width == model.dims.text_width == 384
    batch = prior_batch(tokenizer, reports)
    for name in model.objectives.objectives:
        out = backward_through(model, batch, name)
        assert all(torch.isfinite(term) for term in out.terms.values()), name
        if name == "prior_global":
            assert model.image_encoder.global_projection.weight.grad is not None


def test_mgca_alone_keeps_the_image_encoder_unprojected():
    """Only objectives that compare widths directly add projections: MGCA has its own heads."""
    from kgvlp.config import load_experiment
    from kgvlp.models.vlp import VLPModel
    from kgvlp.objectives import REGISTRY
    cfg = load_experiment(None, ["model.image.name=vit_test", "model.image.image_size=32",
                                 "model.text.num_layers=1", "objectives.ita.weight=1"]).config
    model = VLPModel(cfg.model, cfg.objectives, REGISTRY)
    assert getattr(model.image_encoder, "global_projection", None) is None
    assert model.dims.image_width == 64


def test_projection_widths_that_still_differ_fail_naming_both_keys():
    """With a projection configured on one side only, the model does not guess: it names
    model.image.projection_dim and model.text.projection_dim."""
    from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
    from kgvlp.models.vlp import VLPModel
    from kgvlp.objectives import REGISTRY
    cfg = ModelConfig(image=ImageEncoderConfig(name="vit_test", image_size=32, projection_dim=128),
                      text=TextEncoderConfig(max_length=16, num_layers=1))
    with pytest.raises(ValueError, match=r"model.image.projection_dim=128 .* model.text.projection_dim=None"):
        VLPModel(cfg, {"prior_global": REGISTRY["prior_global"].Config()}, REGISTRY)
