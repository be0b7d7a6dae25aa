"""Each MLIP term is finite, and gradients reach exactly the modules they should: never
the divergence encoders (buffers only) or the frozen concept table."""
from __future__ import annotations

import pytest
import torch

from mlip.helpers import make_batch, make_model
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.base import StepContext

MLIP = ["mlip_global", "tkp_alignment", "category_contrast", "itm", "text_swap"]
CTX = StepContext(step=3, epoch=1.0, max_steps=10)


@pytest.fixture(scope="module")
def full_model(bank_dir):
    return make_model(bank_dir, {n: REGISTRY[n].Config() for n in MLIP}, queue_size=16)


def groups(model) -> dict[str, bool]:
    parts = {"image_encoder": model.image_encoder, "text_encoder": model.text_encoder,
             "projections": model.projections, "knowledge_projection": model.services.knowledge_bank.projection}
    parts.update({f"objectives.{n}": m for n, m in model.objectives.objectives.items()
                  if any(True for _ in m.parameters())})
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
            for name, module in parts.items()}


def backward_through(model, tokenizer, name):
    model.zero_grad(set_to_none=True)
    batch = make_batch(tokenizer)
    features = model.encode(batch)
    out = model.objectives.objectives[name](features, CTX)
    sum(out.terms.values()).backward()
    return out


@pytest.mark.parametrize("name", MLIP)
def test_every_term_is_finite(full_model, tokenizer, name):
    out = backward_through(full_model, tokenizer, name)

    assert out.terms
    for term, value in out.terms.items():
        assert torch.isfinite(value), term


EXPECTED = {   # which parts each objective trains (others get no gradient)
    "mlip_global": {"image_encoder", "text_encoder", "projections"},
    "tkp_alignment": {"image_encoder", "text_encoder", "knowledge_projection", "objectives.tkp_alignment"},
    "category_contrast": {"image_encoder", "text_encoder", "projections", "knowledge_projection",
                          "objectives.category_contrast"},
    "itm": {"image_encoder", "text_encoder", "objectives.itm"},
    "text_swap": {"image_encoder", "text_encoder", "objectives.text_swap"},
}


@pytest.mark.parametrize("name", MLIP)
def test_gradients_reach_exactly_the_right_modules(full_model, tokenizer, name):
    backward_through(full_model, tokenizer, name)

    trained = {part for part, has_grad in groups(full_model).items() if has_grad}
    assert trained == EXPECTED[name]


def test_divergence_encoders_and_concept_table_hold_no_parameters(full_model):
    divergence = full_model.services.divergence
    bank = full_model.services.knowledge_bank

    assert list(divergence.parameters()) == []
    assert not any(b.requires_grad for b in divergence.buffers())
    assert "table" in dict(bank.named_buffers()) and not bank.table.requires_grad
    assert {n for n, _ in bank.named_parameters()} == {"projection.weight", "projection.bias"}


def test_a_report_without_concepts_still_trains_the_other_objectives(bank_dir, tokenizer):
    model = make_model(bank_dir, {n: REGISTRY[n].Config() for n in ("ita", "tkp_alignment")})
    batch = make_batch(tokenizer)
    batch.entity_ids[:] = -1

    loss, logs = model(batch, CTX)
    loss.backward()

    assert torch.isfinite(loss) and logs["loss/tkp_alignment/tkp"] == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoder.parameters())
