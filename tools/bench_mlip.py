"""MLIP stack vs MGCA stack: training pairs/s measured side by side in one process,
steps interleaved across stacks so they share whatever load the machine has.

    python tools/bench_mlip.py [--steps 8] [--warmup 2] [--device cpu|cuda] [key=value ...]

All stacks train on the same pre-collated SynthCXR batch (with its linked concepts and a
second view), through the same DeepSpeed backend as ``kgvlp train``; each step is timed
with device syncs. Stacks: demo.yaml (MGCA: ITA+CTA+CPA), mlip_demo.yaml (MLIP's five
objectives) and MGCA + MLIP; overrides apply to all three. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

STACKS = {
    "mgca": ("configs/experiments/demo.yaml", []),
    "mlip": ("configs/experiments/mlip_demo.yaml", []),
    "mgca+mlip": ("configs/experiments/mlip_demo.yaml",
                  ["objectives.ita.weight=1", "objectives.cta.weight=1", "objectives.cpa.weight=1",
                   "objectives.mlip_global.online_online_weight=0"]),
}
ENTITY_DATA = ["data.entities=ground_truth", "data.second_view=true"]


def build(path, overrides):
    """(step function, batch size) of one stack: model, DeepSpeed engine, one fixed batch."""
    from kgvlp.config import load_experiment
    from kgvlp.data import build_pretrain_dataset
    from kgvlp.data.collate import Collator
    from kgvlp.engine.backend import DeepSpeedBackend, init_distributed, pick_device
    from kgvlp.models.build import build_model
    from kgvlp.models.context import StepContext
    from kgvlp.models.text import load_tokenizer

    cfg = load_experiment(path, overrides + ENTITY_DATA).config
    device = pick_device(cfg.trainer.device, cfg.trainer.precision)
    init_distributed(device)
    torch.manual_seed(0)
    model = build_model(cfg)
    backend = DeepSpeedBackend(model, cfg.trainer, cfg.data.batch_size, device)
    dataset = build_pretrain_dataset(cfg.data, train=True)
    batch = Collator(load_tokenizer(cfg.model.text), cfg.model.text.max_length)(
        [dataset[i] for i in range(cfg.data.batch_size)])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(index: int) -> float:
        ctx = StepContext(step=index + 100, epoch=2.0, steps_per_epoch=50, max_steps=1000)
        sync()
        started = time.perf_counter()
        loss, _ = backend.forward(batch, ctx)
        backend.backward(loss)
        if backend.step():
            backend.module.after_step(ctx)
        sync()
        return time.perf_counter() - started
    return step, cfg.data.batch_size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = [f"trainer.device={args.device}", "trainer.progress=false", *args.overrides]
    stacks = {name: build(path, extra + overrides) for name, (path, extra) in STACKS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in stacks}
    for index in range(args.warmup + args.steps):      # interleaved: every stack sees the same load
        for name, (step, _) in stacks.items():
            elapsed = step(index)
            if index >= args.warmup:
                seconds[name].append(elapsed)
    # This machine's step times vary by up to ~30% from one step to the next (shared CPU), so
    # each round's stacks are compared with each other and the median of those ratios is
    # reported, with its range; pairs/s come from each stack's median step.
    base = seconds["mgca"]
    for name, times in seconds.items():
        pairs = stacks[name][1] / statistics.median(times)
        ratios = [b / t for b, t in zip(base, times)]
        print(f"{name:10s} {pairs:8.1f} pairs/s   × mgca {statistics.median(ratios):.2f} "
              f"(rounds {min(ratios):.2f}–{max(ratios):.2f})")

if __name__ == "__main__":
    main()
