"""With ``official_quirks`` kgvlp's PRIOR computes the official code's numbers (QtacierP/PRIOR
@086bf2e, ``Prior.stage{1,2,3}_step``), to 1e-8 in float64: every loss term, the intermediates
and the gradient of each stage's loss for every input and parameter, end to end from the
token-level encoder outputs (projections, sentence means and pooling are kgvlp's), for two
batch sizes. The official numbers are fixtures written by ``tools/parity_prior.py``."""
from __future__ import annotations

import functools

import pytest
import torch

from kgvlp.models.features import Need
from prior.official_parity import QUERIES, SLOTS, load_fixture, official_name, official_value, run_kgvlp

ATOL = 1e-8
CASES = [(stage, batch) for batch in (4, 6) for stage in ("stage1", "stage2", "stage3")]
# official loss_dict key → kgvlp log, and the factor the official key already carries
TERMS = {
    "global_alignment_loss": ("loss/prior_global/global", 1.0),
    "local_image_loss": ("loss/prior_local/image", 1.0),
    "local_text_loss": ("loss/prior_local/text", 1.0),
    "proto_loss_": ("loss/sentence_prototypes/reconstruction", 10.0),      # × λ_proto
    "rec_image_loss": ("loss/masked_reconstruction/image", 1.0),
    "spg_loss": ("loss/prototype_generation/l1", 10.0),                     # × λ_proto
    "kl_loss": ("loss/prototype_generation/kl", 1.0),
    "gpa_loss": ("loss/prototype_generation/contrast", 1.0),
    "loss": ("loss/total", 1.0),
}


@functools.lru_cache(maxsize=None)
def case(stage: str, batch: int):
    fixture = load_fixture(stage, batch)
    with pytest.MonkeyPatch.context() as monkeypatch:
        return fixture, run_kgvlp(fixture, stage, monkeypatch)


def close(actual, expected, what):
    torch.testing.assert_close(actual.detach().double(), expected.double(), rtol=0, atol=ATOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("stage,batch", CASES)
def test_every_loss_term_and_the_stage_total_are_the_official_ones(stage, batch):
    fixture, run = case(stage, batch)
    official = {key[len(f"term/{stage}_"):]: value for key, value in fixture.items() if key.startswith("term/")}

    assert set(official) <= set(TERMS)
    for key, value in official.items():
        log, factor = TERMS[key]
        close(factor * run.logs[log], value, key)


@pytest.mark.parametrize("stage,batch", CASES)
def test_the_intermediates_are_the_official_ones(stage, batch):
    fixture, run = case(stage, batch)
    features, recorded = run.features, run.recorded
    ours = {"image_tokens": features.image_tokens, "image_global": features.image_global,
            "text_tokens": features.text_tokens, "patch_context": features.extras["prior_local.patch_context"]}
    sentences = fixture["mid/sentences"].shape[1]
    ours["sentences"] = features.sentences[:, :sentences]
    assert not features.sentences[:, sentences:].any()
    if stage == "stage1":
        ours["text_global"] = features.text_global
    else:   # the report vector pools the (stage 3: cut) prototypes
        view = features.extras[Need.PROTOTYPE_BANK.value].for_stage(stage)
        kept = view.prototypes * view.mask[..., None]
        ours["prototypes"] = torch.nn.functional.pad(kept, (0, 0, 0, sentences - kept.shape[1]))
        ours["text_global"] = recorded["pools"][0]
    if stage == "stage3":
        ours["generated"] = recorded["generated"]
        ours["generated_text_global"] = recorded["pools"][1]
        valid = fixture["mid/generated_mixed"].abs().sum(-1) > 0
        ours["generated_mixed"] = (recorded["gumbel"][1] @ view.bank) * valid[..., None]
        ours["reconstruction"] = recorded["reconstruction"][:, :, ::16, ::16]
        assert torch.equal(recorded["assignment"], fixture["mid/assignment"])

    assert {f"mid/{key}" for key in ours} | {"mid/assignment"} >= {k for k in fixture if k.startswith("mid/")}
    for key, value in ours.items():
        close(value, fixture[f"mid/{key}"], key)


@pytest.mark.parametrize("stage,batch", CASES)
def test_every_gradient_is_the_official_one(stage, batch):
    fixture, run = case(stage, batch)
    for key, leaf in run.leaves.items():
        close(leaf.grad, fixture[f"grad/input/{key}"], f"input {key}")
    official = {k[len("grad/param/"):] for k in fixture if k.startswith("grad/param/")}
    seen = set()
    for name, param in run.model.named_parameters():
        theirs = official_name(name)
        assert theirs is not None, f"{name}: no official counterpart"
        grads = [f"grad/param/{n}" for n in official_grad_names(theirs)]
        if not all(g in fixture for g in grads):   # the official code does not use it in this stage
            assert param.grad is None or not param.grad.any(), name
            continue
        expected = official_value({k.replace("grad/param/", "param/"): v for k, v in fixture.items()
                                   if k in grads}, theirs)
        if name.endswith("embeddings.position"):
            assert not expected[QUERIES:].any()
            expected = expected[:QUERIES]
        elif name.endswith("embeddings.token_type"):
            assert not expected[1].any()
            expected = expected[0]
        close(param.grad, expected.reshape(param.shape), name)
        seen.update(n[len("grad/param/"):] for n in grads)

    # what kgvlp has no parameter for gets no gradient in the official code either
    assert all(not fixture[f"grad/param/{name}"].any() for name in official - seen), sorted(official - seen)


def official_grad_names(theirs: str) -> list[str]:
    if "{" not in theirs:
        return [theirs]
    head, tail = theirs.split("{")
    parts, rest = tail.split("}")
    return [f"{head}{part}{rest}" for part in parts.split(",")]


def test_the_fixtures_cut_long_reports_in_stage_3_and_pad_short_ones():
    """The cases exercise both sides of the cut: reports longer and shorter than Q."""
    for batch in (4, 6):
        counts = (load_fixture("stage1", batch)["input/sentence_index"].amax(1))
        assert (counts > QUERIES).any() and (counts < QUERIES).any() and counts.max() <= SLOTS


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_kgvlps_defaults_compute_the_official_stages_1_and_2_but_not_stage_3(stage, monkeypatch):
    fixture = load_fixture(stage, 4)

    run = run_kgvlp(fixture, stage, monkeypatch, quirks=False)

    difference = (run.logs["loss/total"] - fixture[f"term/{stage}_loss"]).abs().item()
    assert difference < ATOL if stage != "stage3" else difference > 1.0   # measured 75.3 vs 55.1
