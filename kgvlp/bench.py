"""``kgvlp bench train``: pairs/s, the step split and peak memory of an experiment.

A benchmark, not a test. It builds the experiment's model and DeepSpeed engine exactly as
training does, feeds fixed pre-collated batches (the image cache makes data loading cheap;
tools/bench_data_cache.py measures the loader's images/s) and times each phase with device
syncs — syncs that the training loop itself never does. ``--baseline "k=v ..."`` runs other
configurations in the same process, so throughput is reported as ratios measured side by side.
``bench_batch`` and ``bench_context`` are shared with ``kgvlp bench compare``
(kgvlp/perf/compare.py).
"""
from __future__ import annotations

import dataclasses
import gc
import resource
import time
from dataclasses import dataclass

import torch

from kgvlp.config import load_experiment
from kgvlp.config.loader import ConfigError
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.text import split_sentences
from kgvlp.engine.schedule import Schedule
from kgvlp.models.context import StepContext
from kgvlp.models.text import load_tokenizer

# Report-like text of realistic length (MGCA reports fill most of 112 tokens).
BENCH_REPORT = ("Findings: the heart is mildly enlarged. There is a small left pleural effusion with "
                "adjacent basilar atelectasis. No pneumothorax is seen. A right internal jugular central "
                "venous catheter terminates in the mid superior vena cava. Degenerative changes of the "
                "thoracic spine. Impression: mild cardiomegaly and small left pleural effusion, which may "
                "represent heart failure. Follow-up radiograph is recommended after diuresis to exclude "
                "an underlying consolidation in the left lower lobe.")


@dataclass
class BenchResult:
    label: str
    pairs_per_s: float
    data_ms: float
    forward_ms: float
    backward_ms: float
    optimizer_ms: float
    peak_memory_gb: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB → GiB (process peak)


def bench_batch(cfg, model):
    """One pre-collated batch of ``cfg.data.batch_size`` random images with BENCH_REPORT,
    carrying what ``model`` reads: a second view, and linked concepts when a knowledge bank
    is built (each sample links a different run of bank rows to words of the report)."""
    size, channels = cfg.model.image.image_size, cfg.model.image.in_chans
    collate = Collator(load_tokenizer(cfg.model.text), cfg.model.text.max_length)
    sentences = split_sentences(BENCH_REPORT)
    second_view = cfg.data.second_view or model.wants_second_view
    bank = model.services["knowledge_bank"] if "knowledge_bank" in model.services else None
    generator = torch.Generator().manual_seed(cfg.seed)

    def entities(i: int) -> dict:
        if bank is None:
            return {}
        from kgvlp.data.entities import ReportEntities, entity_tensors
        count = min(cfg.data.max_entities, 6)
        rows = [(i * 5 + k * 7) % len(bank.cuis) for k in range(count)]
        linked = ReportEntities(rows, [k % 3 == 1 for k in range(count)], [k % 5 == 4 for k in range(count)],
                                [[3 * k + 1, 3 * k + 2] for k in range(count)])
        return entity_tensors(linked, None, cfg.data.max_entities, cfg.data.max_mention_words)

    samples = [Sample(image=torch.randn(channels, size, size, generator=generator), sentences=sentences, index=i,
                      image_view2=torch.randn(channels, size, size, generator=generator) if second_view else None,
                      **entities(i))
               for i in range(cfg.data.batch_size)]
    return collate(samples)


BENCH_STEP = 10 ** 6   # far past any warm-up, prototype freeze and stage start


def bench_context(cfg, stage: str | None = None) -> StepContext:
    """The step context the bench trains at: every objective at full cost — far past any
    warm-up and prototype freeze, in the last stage — or, with ``stage``, at the last step of
    that stage (its name and weights, as ``Schedule.at`` gives them in training)."""
    schedule = Schedule.from_config(cfg, steps_per_epoch=1)
    if stage is None:
        return dataclasses.replace(schedule.at(BENCH_STEP), max_steps=10 * BENCH_STEP)
    spans = {span.name: span for span in schedule.stages}
    if stage not in spans:
        raise ConfigError(f"bench stage={stage}: {cfg.name} has stages {sorted(spans) or 'none'}")
    return schedule.at(spans[stage].end - 1)


def bench_one(experiment_path, overrides, steps: int, warmup: int, label: str) -> BenchResult:
    from kgvlp.engine.backend import DeepSpeedBackend, init_distributed, pick_device
    from kgvlp.models.build import build_model

    cfg = load_experiment(experiment_path, overrides).config
    device = pick_device(cfg.trainer.device, cfg.trainer.precision)
    init_distributed(device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    backend = DeepSpeedBackend(model, cfg.trainer, cfg.data.batch_size, device)
    if cfg.trainer.compile:
        backend.module.compile_for_training()
    started = time.perf_counter()
    batch = bench_batch(cfg, backend.module)
    data_ms = (time.perf_counter() - started) * 1e3
    ctx = bench_context(cfg)
    timings = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        loss, _ = backend.forward(batch, ctx)
        _sync(device)
        t1 = time.perf_counter()
        backend.backward(loss)
        _sync(device)
        t2 = time.perf_counter()
        if backend.step():
            backend.module.after_step(ctx)
        _sync(device)
        t3 = time.perf_counter()
        if step >= warmup:
            timings["forward"] += t1 - t0
            timings["backward"] += t2 - t1
            timings["optimizer"] += t3 - t2
    total = sum(timings.values())
    pairs = cfg.data.batch_size * steps * backend.world_size
    result = BenchResult(label, pairs / total, data_ms, *(timings[k] / steps * 1e3 for k in timings),
                         _peak_memory_gb(device))
    del backend, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def bench_train(experiment_path, overrides, steps: int = 10, warmup: int = 3,
                baselines: list[str] | None = None) -> list[BenchResult]:
    from rich.console import Console
    from rich.table import Table
    configs = [("experiment", list(overrides))]
    configs += [(f"baseline {i + 1}: {b}", list(overrides) + b.split()) for i, b in enumerate(baselines or [])]
    results = [bench_one(experiment_path, o, steps, warmup, label) for label, o in configs]
    table = Table(title=f"kgvlp bench train {experiment_path} ({steps} steps after {warmup} warm-up)")
    for column in ("run", "pairs/s", "× experiment", "collate ms", "forward ms", "backward ms",
                   "optimizer ms", "peak GB"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for r in results:
        table.add_row(r.label, f"{r.pairs_per_s:.1f}", f"{r.pairs_per_s / results[0].pairs_per_s:.2f}",
                      f"{r.data_ms:.1f}", f"{r.forward_ms:.1f}", f"{r.backward_ms:.1f}",
                      f"{r.optimizer_ms:.1f}", f"{r.peak_memory_gb:.2f}")
    Console(width=160).print(table)
    return results
