"""Every ``trainer.precision`` trains through DeepSpeed on CPU, on a model with BatchNorm in
the encoder (ResNet) and in the shared heads, and with a momentum copy:

- fp32, and bf16 = torch.autocast over fp32 weights;
- bf16-weights and fp16 = DeepSpeed's half-precision weights. Buffers (BatchNorm statistics)
  follow the weights, as BatchNorm needs, except the momentum copy, which stays fp32 so that
  updates of (1 − m) ≈ 0.5% are not rounded away.

A precision this CPU cannot run (fp16 without oneDNN fp16, e.g. on AMD EPYC) is skipped with
the reason, and the trainer refuses it before building anything.
"""
from __future__ import annotations

import math

import pytest
import torch

from kgvlp.config import ConfigError
from kgvlp.engine import backend
from kgvlp.engine.backend import PRECISIONS, describe_device, supported_precisions
from kgvlp.objectives.base import StepContext
from mlip.runs import trainer

WEIGHT_DTYPE = {"fp32": torch.float32, "bf16": torch.float32, "bf16-weights": torch.bfloat16,
                "fp16": torch.float16}
CPU = torch.device("cpu")


def on_this_cpu(precision: str):
    able = supported_precisions(CPU)
    reason = f"{describe_device(CPU)} cannot run {precision}; it can run {', '.join(able)}"
    return pytest.param(precision, marks=pytest.mark.skipif(precision not in able, reason=reason))


@pytest.mark.parametrize("precision", [on_this_cpu(p) for p in PRECISIONS])
def test_every_precision_trains_with_batchnorm_and_keeps_the_momentum_copy_fp32(tmp_path, precision):
    run = trainer(tmp_path, [f"trainer.precision={precision}", "trainer.max_steps=2",
                             "model.image.name=resnet_test"])
    history = run.train().history
    model = run.model

    assert [r["step"] for r in history] == [1, 2] and all(math.isfinite(r["loss/total"]) for r in history)
    weights = WEIGHT_DTYPE[precision]
    assert {p.dtype for p in model.parameters()} == {weights}
    statistics = {b.dtype for n, b in model.named_buffers() if n.endswith("running_mean") and ".shadow." not in n}
    assert statistics == {weights}
    copy = {b.dtype for n, b in model.services.divergence.named_buffers() if ".shadow." in n and b.is_floating_point()}
    assert copy == {torch.float32}


def test_with_bf16_weights_the_momentum_update_is_exact_in_fp32(tmp_path):
    run = trainer(tmp_path, ["trainer.precision=bf16-weights", "trainer.max_steps=1"])
    run.train()
    model = run.model
    divergence = model.services.divergence
    shadow = divergence.image_encoder.shadow
    before = {n: b.clone() for n, b in shadow.named_buffers()}
    ctx = StepContext(step=0, max_steps=1000)
    m = divergence.momentum(ctx)

    model.after_step(ctx)

    assert 0.9 <= m < 1.0
    for name, online in model.image_encoder.named_parameters():
        expected = m * before[name] + (1 - m) * online.detach().float()
        torch.testing.assert_close(shadow.get_buffer(name), expected, rtol=1e-6, atol=1e-7)


def test_a_precision_the_device_cannot_run_is_refused_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(backend, "_cpu_runs_fp16", lambda: False)

    with pytest.raises(ConfigError) as error:
        backend.pick_device("cpu", "fp16")

    assert str(error.value).startswith("trainer.precision=fp16: this CPU (")
    assert str(error.value).endswith("cannot run it; it can run fp32, bf16, bf16-weights")
