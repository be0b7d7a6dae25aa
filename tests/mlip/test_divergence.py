"""Divergence encoders: the EMA rule, once per optimizer step (also with gradient
accumulation), and exact resume with the queue."""
from __future__ import annotations

import pytest
import torch

from mlip.helpers import make_batch, make_model
from mlip.runs import trainer
from kgvlp.modules.divergence import DivergenceEncoders
from kgvlp.modules.ema import momentum_at
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.base import StepContext


def test_the_first_use_copies_the_online_encoders(bank_dir, tokenizer):
    model = make_model(bank_dir, {"mlip_global": REGISTRY["mlip_global"].Config()})
    divergence = model.services.divergence

    model.encode(make_batch(tokenizer))

    for name, param in model.projections.named_parameters():
        torch.testing.assert_close(divergence.projections.shadow.get_buffer(name), param, rtol=0, atol=0)
    assert bool(divergence.synced)


def test_the_update_is_the_momentum_formula_with_the_cosine_schedule(bank_dir, tokenizer):
    model = make_model(bank_dir, {"mlip_global": REGISTRY["mlip_global"].Config()})
    divergence = model.services.divergence
    model.encode(make_batch(tokenizer))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    before = {n: b.clone() for n, b in divergence.text_encoder.shadow.named_buffers()}
    ctx = StepContext(step=30, max_steps=100)

    model.after_step(ctx)

    m = momentum_at(30, 100, 0.995, 1.0)
    assert divergence.momentum(ctx) == pytest.approx(m) and 0.995 < m < 1.0
    for name, online in model.text_encoder.named_parameters():
        expected = m * before[name] + (1 - m) * online.detach()
        torch.testing.assert_close(divergence.text_encoder.shadow.get_buffer(name), expected)


def test_one_update_per_optimizer_step_under_gradient_accumulation(tmp_path, monkeypatch):
    calls = []
    original = DivergenceEncoders.after_step

    def counted(self, model, ctx):
        calls.append(ctx.step)
        return original(self, model, ctx)
    monkeypatch.setattr(DivergenceEncoders, "after_step", counted)
    run = trainer(tmp_path / "accum", ["trainer.grad_accum=2", "trainer.max_steps=3",
                                           "model.services.divergence.queue_size=64"])

    run.train()

    assert calls == [0, 1, 2]
    queue = run.model.services.divergence.queues
    assert int(queue.image.filled) == 3 * 2 * 4      # both micro-batches of every step enqueued


@pytest.mark.parametrize("image", ["vit_test", "resnet_test"])   # ResNet: a channels-last copy
def test_queue_and_divergence_encoders_round_trip_and_resume_gives_identical_losses(tmp_path, image):
    steps = ["trainer.max_steps=6", "trainer.checkpoint_every=3", f"model.image.name={image}"]
    full = trainer(tmp_path / "full", steps).train().history
    killed = trainer(tmp_path / "killed", steps)
    save = killed.save_checkpoint

    def save_then_die():        # killed right after the step-3 checkpoint
        save()
        raise KeyboardInterrupt
    killed.save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    saved = {k: v.clone() for k, v in killed.model.services.divergence.state_dict().items()}

    resumed_trainer = trainer(tmp_path / "killed", steps, resume=True)
    restored = {k: v.clone() for k, v in resumed_trainer.model.services.divergence.state_dict().items()}
    resumed = resumed_trainer.train().history

    assert saved.keys() == restored.keys() and "queues.image.features" in saved
    assert [k for k, v in saved.items() if not torch.equal(restored[k], v)] == []
    expected = {r["step"]: r["loss/total"] for r in full}
    assert [r["step"] for r in resumed] == [4, 5, 6]
    for row in resumed:
        assert row["loss/total"] == pytest.approx(expected[row["step"]], abs=1e-6)


def test_with_a_locked_text_tower_the_divergence_text_is_the_online_report_vector(bank_dir, tokenizer):
    """model.text.frozen_layers=-1: no text copy is kept and no second text forward runs;
    the divergence report embedding is the momentum heads applied to the online [CLS] state."""
    from kgvlp.models.vlp import VLPModel
    from mlip.helpers import model_config
    cfg = model_config(bank_dir)
    cfg.text.frozen_layers = -1
    torch.manual_seed(0)
    model = VLPModel(cfg, {"mlip_global": REGISTRY["mlip_global"].Config()}, REGISTRY).eval()
    divergence = model.services.divergence
    assert divergence.text_encoder is None
    assert not any(name.startswith("text_encoder") for name, _ in divergence.named_buffers())

    features = model.encode(make_batch(tokenizer))

    heads = divergence.projections.shadow
    torch.testing.assert_close(features.extras["divergence"].text_embed, heads.text(features.text_global),
                               rtol=0, atol=0)


def test_a_cnn_copy_runs_channels_last_and_computes_what_the_online_encoder_computes(bank_dir, tokenizer):
    """The ResNet divergence copy lives outside DeepSpeed, so it holds NHWC weights (faster
    convolutions); the layout changes no value, and the EMA update still lands in it."""
    model = make_model(bank_dir, {"mlip_global": REGISTRY["mlip_global"].Config()}, image="resnet_test")
    divergence = model.services.divergence
    batch = make_batch(tokenizer)
    model.encode(batch)                                         # first use copies the weights
    shadow = divergence.image_encoder.shadow
    channels_last = torch.channels_last
    assert shadow.backbone.layer1[0].conv1.weight.is_contiguous(memory_format=channels_last)
    assert not model.image_encoder.backbone.layer1[0].conv1.weight.is_contiguous(memory_format=channels_last)

    with torch.no_grad():
        copy_out = shadow(batch.images_view2)
        online_out = model.image_encoder(batch.images_view2)
    torch.testing.assert_close(copy_out.global_vector, online_out.global_vector, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(copy_out.tokens, online_out.tokens, rtol=1e-4, atol=1e-5)

    before = shadow.backbone.layer1[0].conv1.weight.clone()
    with torch.no_grad():
        model.image_encoder.backbone.layer1[0].conv1.weight.add_(0.1)
    ctx = StepContext(step=30, max_steps=100)
    model.after_step(ctx)
    m = divergence.momentum(ctx)
    expected = m * before + (1 - m) * model.image_encoder.backbone.layer1[0].conv1.weight
    torch.testing.assert_close(shadow.backbone.layer1[0].conv1.weight, expected)
    assert shadow.backbone.layer1[0].conv1.weight.is_contiguous(memory_format=channels_last)
