"""``trainer.grad_accum: k`` gives the objectives the whole configured batch.

k = 4 micro-batches of 2 (cached features, the loss on all 8, replayed backward) equal one
batch of 8: loss, every term, every parameter gradient and the state written after the
step (queues, banks, BatchNorm statistics), in float64 to 1e-9 — for every objective that
reads the global batch. Randomness in the encoders is replayed exactly in the re-forward.
"""
from __future__ import annotations

import pytest
import torch

from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.engine.accumulation import accumulate
from kgvlp.models.context import StepContext
from kgvlp.models.features import Features
from kgvlp.models.vlp import VLPModel
from kgvlp.modules.divergence import DivergenceConfig
from kgvlp.modules.registry import SERVICES
from kgvlp.objectives import REGISTRY
from kgvlp_tiny import make_batch as make_plain_batch
from mlip.helpers import bank_config, write_bank
from mlip.helpers import make_batch as make_mlip_batch

MICRO, K = 2, 4
ATOL = 1e-9          # float64: what is left is the order of additions (cat vs. one batch)
# epoch 2: after CPA's prototype freeze; stage "s3": PRIOR's objectives read the bank.
CTX = StepContext(step=10, epoch=2.0, stage="s3", max_steps=100)

TEXT = TextEncoderConfig(max_length=32, num_layers=1, dropout=0.0)
VIT = ImageEncoderConfig(name="vit_test", image_size=64)


def configs(**fields) -> dict:
    """{objective: Config} with the given fields set (e.g. cpa={"num_prototypes": 8})."""
    out = {}
    for name, values in fields.items():
        out[name] = REGISTRY[name].Config()
        for key, value in values.items():
            setattr(out[name], key, value)
    return out


def mgca():
    return ModelConfig(image=VIT, text=TEXT), configs(
        ita={}, cta={"hidden_dim": 64}, cpa={"num_prototypes": 8, "freeze_prototypes_epochs": 0.5})


def mgca_official_quirks():
    """The official code's layout: word slots from the mgca_words service, per-GPU heads."""
    quirks = {"official_quirks": True}
    return ModelConfig(image=VIT, text=TEXT, sync_batchnorm=False), configs(
        ita=quirks, cta={"hidden_dim": 64, **quirks},
        cpa={"num_prototypes": 8, "freeze_prototypes_epochs": 0.5, **quirks})


def mlip(bank):
    services = {"knowledge_bank": bank_config(bank), "divergence": DivergenceConfig(queue_size=12)}
    return ModelConfig(image=VIT, text=TEXT, services=services), configs(
        mlip_global={}, category_contrast={}, itm={}, text_swap={}, tkp_alignment={})


def prior(bank=None, mode: str = "feature_dropout"):
    width = 32
    model = ModelConfig(
        image=ImageEncoderConfig(name="vit_test", image_size=64, projection_dim=width),
        text=TextEncoderConfig(max_length=32, num_layers=1, dropout=0.0, projection_dim=width,
                               global_pool="sentence_attention"),
        services={"sentence_bank": SERVICES["sentence_bank"].Config(size=16)})
    if mode == "patch_mask":
        return model, configs(masked_reconstruction={"mode": "patch_mask"}, prior_local={})
    return model, configs(
        prior_global={"prototype_stages": ["s3"]}, prior_local={"prototype_stages": ["s3"]},
        sentence_prototypes={}, masked_reconstruction={},
        prototype_generation={"num_layers": 2, "num_heads": 4, "num_queries": 4})


GROUPS = {"mgca": mgca, "mgca_official_quirks": mgca_official_quirks, "mlip": mlip, "prior": prior, "prior_patch_mask": lambda bank: prior(mode="patch_mask")}


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bank")
    write_bank(folder)
    return folder


def build(group: str, bank) -> VLPModel:
    maker = GROUPS[group]
    model_cfg, objective_cfgs = maker() if group.startswith("mgca") else maker(bank)
    torch.manual_seed(0)
    return VLPModel(model_cfg, objective_cfgs, REGISTRY).double()


def whole_batch(group: str, tokenizer, reports):
    batch = (make_mlip_batch(tokenizer, size=MICRO * K) if group == "mlip"
             else make_plain_batch(tokenizer, reports, size=MICRO * K))
    return batch.to(torch.device("cpu"), torch.float64)


def micro_batches(batch):
    return [batch.select(slice(i * MICRO, (i + 1) * MICRO)) for i in range(K)]


def cached_step(model: VLPModel, batches, ctx=CTX):
    return accumulate(batches, encode=lambda b: model(b, ctx, part="samples"),
                      loss_of=lambda f: model(f, ctx, part="loss"),
                      backward=lambda tensor, last: tensor.backward(), module=model,
                      device=torch.device("cpu"))


def after_one_step(model: VLPModel, run) -> dict:
    """Loss, logs, gradients and every buffer after ``run`` and the model's ``after_step``."""
    torch.manual_seed(1)
    model.zero_grad(set_to_none=True)
    loss, logs = run()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.after_step(CTX)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return {"loss": loss.detach(), "logs": logs, "grads": grads, "buffers": buffers}


def assert_same_step(got: dict, want: dict) -> None:
    torch.testing.assert_close(got["loss"], want["loss"], rtol=0, atol=ATOL)
    assert got["logs"].keys() == want["logs"].keys()
    for key, value in want["logs"].items():
        torch.testing.assert_close(got["logs"][key], value, rtol=0, atol=ATOL, msg=key)
    assert got["grads"].keys() == want["grads"].keys()
    for name, grad in want["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-9, atol=ATOL, msg=name)
    for name, buffer in want["buffers"].items():
        torch.testing.assert_close(got["buffers"][name], buffer, rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize("group", list(GROUPS))
def test_four_micro_batches_equal_one_batch_of_four_times_the_size(group, bank, tokenizer, reports):
    """mgca: ita, cta, cpa (Sinkhorn), also with the official quirks; mlip: mlip_global (divergence queue), category_contrast,
    itm, text_swap, tkp_alignment; prior: prior_global, prior_local, sentence_prototypes
    (bank usage), masked_reconstruction, prototype_generation; and the MAE masked view."""
    batch = whole_batch(group, tokenizer, reports)
    one = build(group, bank)
    accumulated = build(group, bank)
    for _ in range(2):   # the second step reads the queue and bank state the first one wrote
        want = after_one_step(one, lambda: _backward(one(batch, CTX)))
        got = after_one_step(accumulated, lambda: cached_step(accumulated, micro_batches(batch)))
        assert_same_step(got, want)
    assert {key.split("/")[1] for key in want["logs"] if key.startswith("weighted/")} == set(one.objectives.objectives)


def test_a_service_feature_without_batch_independent_fields_cannot_be_concatenated():
    """A service's typed feature object must say which fields are not one row per sample
    (a bank, a queue): concatenating it would otherwise silently repeat them k times."""
    from dataclasses import dataclass

    @dataclass
    class BankView:
        assignment: torch.Tensor
        bank: torch.Tensor

    parts = [Features(extras={"bank": BankView(torch.ones(2, 3), torch.ones(3, 4))}) for _ in range(2)]
    with pytest.raises(TypeError, match="BankView.*batch_independent"):
        Features.concat(parts)

    BankView.batch_independent = frozenset({"bank"})
    joined = Features.concat(parts).extras["bank"]
    assert joined.assignment.shape == (4, 3) and joined.bank.shape == (3, 4)


def _backward(result):
    loss, logs = result
    loss.backward()
    return loss, logs


def kept_graph_step(model: VLPModel, batches):
    """The reference for random encoders: each micro-batch encoded with its graph kept, in
    the same order (so the same draws), then the loss on all of them."""
    features = Features.concat([model(b, CTX, part="samples") for b in batches])
    loss, logs = model(features, CTX, part="loss")
    loss.backward()
    return loss, logs


def test_the_re_forward_replays_the_encoders_random_draws(tokenizer, reports):
    """With dropout on, the replayed micro-batches draw the masks of the cached pass: the
    gradients equal those of keeping every micro-batch's graph."""
    text = TextEncoderConfig(max_length=32, num_layers=1, dropout=0.3)
    cfg = ModelConfig(image=VIT, text=text)
    batch = make_plain_batch(tokenizer, reports, size=MICRO * K).to(torch.device("cpu"), torch.float64)

    def model():
        torch.manual_seed(0)
        return VLPModel(cfg, configs(ita={}, cta={"hidden_dim": 64}), REGISTRY).double()
    reference, accumulated = model(), model()
    want = after_one_step(reference, lambda: kept_graph_step(reference, micro_batches(batch)))
    got = after_one_step(accumulated, lambda: cached_step(accumulated, micro_batches(batch)))

    assert_same_step(got, want)
    assert want["loss"] != after_one_step(reference, lambda: _backward(reference(batch, CTX)))["loss"]


def test_cnn_batchnorm_statistics_count_each_micro_batch_once(tokenizer, reports):
    """A CNN backbone normalises each micro-batch; the cached pass leaves its running
    statistics alone, so they advance once per micro-batch (by the replay), as when each
    micro-batch's graph is kept."""
    cfg = ModelConfig(image=ImageEncoderConfig(name="resnet_test", image_size=64), text=TEXT)
    batch = make_plain_batch(tokenizer, reports, size=MICRO * K).to(torch.device("cpu"), torch.float64)

    def model():
        torch.manual_seed(0)
        return VLPModel(cfg, configs(ita={}), REGISTRY).double()
    reference, accumulated = model(), model()
    want = after_one_step(reference, lambda: kept_graph_step(reference, micro_batches(batch)))
    got = after_one_step(accumulated, lambda: cached_step(accumulated, micro_batches(batch)))

    assert_same_step(got, want)
    tracked = [v for k, v in got["buffers"].items() if k.startswith("image_encoder") and k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == K for v in tracked)


# -- through the trainer and DeepSpeed ---------------------------------------------------------

def test_the_trainer_with_grad_accum_trains_like_the_batch_it_accumulates(tmp_path):
    """One process, ZeRO-0, float32: batch 2 × grad_accum 2 logs the losses of batch 4
    (the same samples: the sampler's permutation does not depend on the batch size). Not
    closer than float32 allows: encoding 2 rows instead of 4 rounds differently and the
    heads' BatchNorm amplifies it (measured 8e-5 at step 1; the float64 tests above are the
    exact check). Micro-batch negatives would be off by ~log 2."""
    from engine.runs import losses, train
    four = train(str(tmp_path / "four"), ["trainer.max_steps=3", "data.batch_size=4"])
    two_by_two = train(str(tmp_path / "accum"), ["trainer.max_steps=3", "data.batch_size=2",
                                                 "trainer.grad_accum=2"])
    assert losses(two_by_two)[1] == pytest.approx(losses(four)[1], abs=5e-4)
    for step, value in losses(four).items():
        assert losses(two_by_two)[step] == pytest.approx(value, abs=1e-2), step
    assert [row["pairs_per_s"] > 0 for row in two_by_two] == [True] * 3


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_ranks_with_grad_accum_train_like_one_process_on_the_whole_batch(tmp_path, zero_stage):
    """2 gloo ranks × batch 2 × grad_accum 2 = one process on batch 8: global negatives and
    Sinkhorn over all 8, gradients reduced once per step by ZeRO (float32; the tolerances
    of test_training's two-rank test, whose first step is exact to rounding)."""
    from engine.runs import losses, run_ranks, train
    one = train(str(tmp_path / "one"), ["trainer.max_steps=3", "data.batch_size=8"])
    two = run_ranks(2, tmp_path / "two", ["trainer.max_steps=3", "data.batch_size=2", "trainer.grad_accum=2",
                                          f"trainer.zero_stage={zero_stage}"], "full")
    assert losses(two)[1] == pytest.approx(losses(one)[1], abs=1e-4)
    for step, value in losses(two).items():
        assert value == pytest.approx(losses(one)[step], abs=1e-2), step


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm().clamp(min=1e-300))


# ZeRO-3 is not here: it partitions only float32/half weights; its float32 training with
# accumulation is the test above (zero_stage 3).
@pytest.mark.parametrize("zero_stage", [1, 2])
def test_zero_reduces_the_accumulated_gradients_of_two_ranks_once(tmp_path, zero_stage):
    """2 gloo ranks × 2 micro-batches of 2 through DeepSpeed ZeRO-1/2, model in float64: the
    reduced gradient of every parameter before the step equals one process's on all 8. ZeRO
    keeps its gradient partitions in float32, so the check is at float32's precision: every
    sizeable gradient to ``each`` of its norm (measured ≤ 4.6e-5, all together 1.3e-6;
    a gradient reduced twice, or a micro-batch or the loss step missing, is off by its own
    size) and all of them together to ``overall``. Gradients that are zero in exact
    arithmetic (biases before a BatchNorm) keep float32 noise of the two ranks' halves and
    are held to 1e-4 absolute (measured ≤ 3.8e-6)."""
    import torch.multiprocessing as mp

    from engine import accum_ranks
    from two_ranks import free_port
    dtype, each, overall = torch.float64, 2e-4, 1e-5
    overrides = ["objectives.cta.weight=0"]
    want = accum_ranks.reference(overrides, dtype)
    out = tmp_path / "ranks.pt"
    mp.start_processes(accum_ranks.rank_main, args=(2, free_port(), zero_stage, dtype, overrides, str(out)),
                       nprocs=2, join=True, start_method="spawn")
    got = torch.load(out, weights_only=True)

    torch.testing.assert_close(got["loss"], want["loss"], rtol=0, atol=1e-10)
    assert got["grads"].keys() == want["grads"].keys()
    largest = max(float(grad.norm()) for grad in want["grads"].values())
    for name, grad in want["grads"].items():
        if float(grad.norm()) > 1e-3 * largest:
            assert relative_error(got["grads"][name], grad.double()) < each, name
        else:
            assert float((got["grads"][name].double() - grad).abs().max()) < 1e-4, name
    names = sorted(want["grads"])
    assert relative_error(torch.cat([got["grads"][n].double().flatten() for n in names]),
                          torch.cat([want["grads"][n].double().flatten() for n in names])) < overall
