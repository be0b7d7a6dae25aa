"""``kgvlp bench compare EXP.yaml [k=v …] [--also "…"]``: each experiment's full objective
stack against the ceiling — a plain symmetric-InfoNCE step on the same encoders, batch and
precision (kgvlp/perf/reference.py) — timed interleaved in one process.

Per run it reports pairs/s (from the median step, each step timed between device syncs),
the ratio to its reference measured in the same rounds, peak memory, FLOP per pair
(FlopCounterMode over one whole step), MFU against a large matmul timed in the run's dtype
in this process, the per-phase / per-objective split of one profiled step (kgvlp/perf/
ranges.py; chrome traces saved), and on CUDA the host-sync check
(``torch.cuda.set_sync_debug_mode("error")``) and torch.compile's graph breaks.

Runs: the positional experiment with its overrides, then one per ``--also``: overrides on
top of the positional ones, or another experiment (``--also "other.yaml k=v"``). Two bench
words go with the overrides: ``as=LABEL`` names the run, ``stage=NAME`` trains at that stage's
last step instead of past the end of the schedule (kgvlp.bench.bench_context). Runs with the
same encoders, batch size, precision and compile flag share one reference step.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import os
import resource
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from kgvlp.bench import bench_batch, bench_context
from kgvlp.config import load_experiment
from kgvlp.models.build import training_model_config
from kgvlp.perf.ranges import split_ms, step_ranges
from kgvlp.perf.reference import ReferenceStep

BENCH_WORDS = ("as", "stage")
NOT_ON_CPU = "n/a (CPU)"


@dataclass
class RunSpec:
    label: str
    experiment: str
    overrides: list[str]
    stage: str | None = None


@dataclass
class RunResult:
    """One row of the report (and of ``compare.json``)."""
    label: str
    kind: str                          # "reference" | "stack"
    experiment: str
    overrides: list[str]
    stage: str | None
    reference: str | None              # label of the reference this stack is measured against
    batch_size: int
    precision: str
    compile: bool
    active_objectives: list[str]
    pairs_per_s: float = 0.0
    step_ms: float = 0.0               # median of the timed steps
    step_ms_range: tuple[float, float] = (0.0, 0.0)
    ratio_to_reference: float = 1.0    # pairs/s ÷ the reference's, same rounds of this run
    round_ratio_range: tuple[float, float] = (1.0, 1.0)   # per interleaved round
    peak_memory_gb: float = 0.0
    peak_memory_source: str = ""
    flop_per_pair: float = 0.0
    mfu: float = 0.0                   # flop_per_pair × pairs/s ÷ matmul peak of its dtype
    matmul_dtype: str = ""
    split_ms: dict[str, float] = field(default_factory=dict)
    split_clock: str = ""
    host_syncs: int | str = NOT_ON_CPU
    graph_breaks: int | str = NOT_ON_CPU
    trace: str = ""


def _bench_words(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    words, rest = {}, []
    for token in tokens:
        key, eq, value = token.partition("=")
        if key in BENCH_WORDS and eq:
            words[key] = value
        else:
            rest.append(token)
    return words, rest


def parse_runs(experiment: str, overrides: list[str], also: list[str]) -> list[RunSpec]:
    """The positional run and one per ``--also`` string (see the module docstring); bench
    words among the positional overrides name the positional run only."""
    first_words, overrides = _bench_words(overrides)
    specs = []
    for extra in [None, *also]:
        tokens = extra.split() if extra else []
        path = experiment
        if tokens and tokens[0].endswith((".yaml", ".yml")):
            path, tokens = tokens[0], tokens[1:]
        words, own = _bench_words(tokens)
        if extra is None:
            words = first_words
        label = words.get("as") or " ".join([Path(path).stem, *own])
        specs.append(RunSpec(label, path, list(overrides) + own, words.get("stage")))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"bench compare: two runs share a label in {labels}; name them with as=LABEL")
    return specs


def dry_run(specs: list[RunSpec]) -> list[str]:
    """Load every run's config and step context without building anything: one line each."""
    lines = []
    for spec in specs:
        cfg = load_experiment(spec.experiment, spec.overrides).config
        ctx = bench_context(cfg, spec.stage)
        active = [name for name, weight in (ctx.weights or {}).items() if weight]
        lines.append(f"{spec.label}: {spec.experiment} {' '.join(spec.overrides)} → stage {ctx.stage or '-'}, "
                     f"batch {cfg.data.batch_size}, {cfg.trainer.precision}, compile {cfg.trainer.compile}, "
                     f"ZeRO-{cfg.trainer.zero_stage}, objectives {', '.join(active)}")
    return lines


def _say(message: str) -> None:
    """Progress on stderr: a CPU comparison can take minutes."""
    print(f"bench compare: {message}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class StackStep:
    """The experiment's model from ``build_model`` in the DeepSpeed backend, stepped as the
    trainer steps it: forward, backward, optimizer step and ``after_step`` at the boundary."""

    def __init__(self, cfg, device: torch.device, ctx):
        from kgvlp.engine.backend import DeepSpeedBackend
        from kgvlp.models.build import build_model
        torch.manual_seed(cfg.seed)
        self.backend = DeepSpeedBackend(build_model(cfg), cfg.trainer, cfg.data.batch_size, device)
        self.ctx = ctx
        self.model = self.backend.module

    def compile(self) -> None:
        self.model.compile_for_training()

    def step(self, batch) -> torch.Tensor:
        with torch.profiler.record_function("kgvlp/forward"):
            loss, _ = self.backend.forward(batch, self.ctx)
        with torch.profiler.record_function("kgvlp/backward"):
            self.backend.backward(loss)
        with torch.profiler.record_function("kgvlp/optimizer"):
            if self.backend.step():
                self.model.after_step(self.ctx)
        return loss.detach()


@dataclass
class _Run:
    result: RunResult
    runner: object            # StackStep | ReferenceStep
    batch: object
    device: torch.device
    times: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)

    @property
    def model(self):
        return self.runner.model


def _reference_key(cfg) -> str:
    model = training_model_config(cfg)
    return repr((model.image, model.text, cfg.data.batch_size, cfg.trainer.precision, cfg.trainer.compile,
                 cfg.trainer.device))


def _matmul_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision in ("bf16", "bf16-weights") else torch.float32


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul in ``dtype`` on ``device``, timed here: the fastest
    of several timings (a shared CPU's load spikes would otherwise set the peak)."""
    n, reps = (8192, 10) if device.type == "cuda" else (1024, 6)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best


def _flops(run: _Run) -> float:
    """FLOP per pair of one whole step (forward, backward, optimizer), counted by torch."""
    with FlopCounterMode(display=False) as counter:
        run.runner.step(run.batch)
    return counter.get_total_flops() / run.result.batch_size


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


def _timed_step(run: _Run) -> None:
    device = run.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    started = time.perf_counter()
    run.runner.step(run.batch)
    _sync(device)
    run.times.append(time.perf_counter() - started)
    if device.type == "cuda":
        run.peaks.append(torch.cuda.max_memory_allocated() / 2 ** 30)


def _first_frame(err: BaseException) -> str:
    """The innermost kgvlp or deepspeed frame of ``err``'s traceback, as file:line."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "kgvlp" in f.filename or "deepspeed" in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    parts = Path(frame.filename).parts
    start = max((i for i, p in enumerate(parts) if p in ("kgvlp", "deepspeed")), default=0)
    return f"{'/'.join(parts[start:])}:{frame.lineno}"


def _sync_check(run: _Run) -> int | str:
    """0 when one step runs under ``set_sync_debug_mode("error")``, else where it synced."""
    if run.device.type != "cuda":
        return NOT_ON_CPU
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run.runner.step(run.batch)
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        return 0
    except RuntimeError as err:
        return f"syncs at {_first_frame(err)}: {str(err).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _profile(run: _Run, out: Path) -> None:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if run.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with step_ranges(run.model), torch.profiler.profile(activities=activities) as prof:
        run.runner.step(run.batch)
        _sync(run.device)
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.result.label)
    trace = out / f"trace-{slug}.json"
    prof.export_chrome_trace(str(trace))
    run.result.split_ms = split_ms(prof)
    run.result.split_clock = "device" if run.device.type == "cuda" else "host"
    run.result.trace = str(trace)


def _build(specs: list[RunSpec]) -> list[_Run]:
    """Each stack, preceded by a reference for each distinct encoder/batch/precision setting."""
    from kgvlp.engine.backend import init_distributed, pick_device
    runs, references = [], {}
    for spec in specs:
        cfg = load_experiment(spec.experiment, spec.overrides).config
        device = pick_device(cfg.trainer.device, cfg.trainer.precision)
        init_distributed(device)
        ctx = bench_context(cfg, spec.stage)
        stack = StackStep(cfg, device, ctx)
        batch = bench_batch(cfg, stack.model)
        common = dict(experiment=spec.experiment, overrides=spec.overrides, stage=spec.stage,
                      batch_size=cfg.data.batch_size, precision=cfg.trainer.precision, compile=cfg.trainer.compile)
        key = _reference_key(cfg)
        if key not in references:
            label = f"reference ({spec.label})" if references else "reference"
            references[key] = label
            torch.manual_seed(cfg.seed)
            result = RunResult(label, "reference", reference=None, active_objectives=["symmetric InfoNCE"], **common)
            runs.append(_Run(result, ReferenceStep(cfg, device), batch, device))
        result = RunResult(spec.label, "stack", reference=references[key],
                           active_objectives=stack.model.objectives.active(ctx), **common)
        runs.append(_Run(result, stack, batch, device))
    return runs


def _warm_up(run: _Run, warmup: int) -> None:
    """FLOPs on the eager step (also its lazy initialisation), then compile and warm-up
    steps, each run on its own so its compilation's graph breaks are its own."""
    run.result.flop_per_pair = _flops(run)
    cuda = run.device.type == "cuda"
    if run.result.compile:
        run.runner.compile()
    before = _graph_breaks() if cuda else 0
    for _ in range(warmup):
        run.runner.step(run.batch)
    _sync(run.device)
    if cuda:
        run.result.graph_breaks = _graph_breaks() - before if run.result.compile else "n/a (eager)"
    else:
        run.result.peak_memory_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        run.result.peak_memory_source = "process max RSS after this run's warm-up (CPU)"


def _summarise(runs: list[_Run], peaks: dict[torch.dtype, float]) -> None:
    by_label = {run.result.label: run for run in runs}
    for run in runs:
        r = run.result
        median = statistics.median(run.times)
        r.step_ms = median * 1e3
        r.step_ms_range = (min(run.times) * 1e3, max(run.times) * 1e3)
        r.pairs_per_s = r.batch_size / median
        if run.peaks:
            r.peak_memory_gb, r.peak_memory_source = max(run.peaks), "torch.cuda.max_memory_allocated"
        dtype = _matmul_dtype(r.precision)
        r.matmul_dtype = str(dtype).removeprefix("torch.")
        r.mfu = r.flop_per_pair * r.pairs_per_s / peaks[dtype]
    for run in runs:
        r = run.result
        if r.reference is not None:
            ref = by_label[r.reference]
            r.ratio_to_reference = r.pairs_per_s / ref.result.pairs_per_s
            rounds = [a / b for a, b in zip(ref.times, run.times)]
            r.round_ratio_range = (min(rounds), max(rounds))


def compare(specs: list[RunSpec], steps: int, warmup: int, out: Path) -> dict:
    """Build every run, warm each up, time ``steps`` interleaved rounds (each run once per
    round, so all share whatever load the machine has), profile and sync-check one step of
    each; the report as a dict (also written to ``out/compare.json``)."""
    if steps < 1:
        raise ValueError(f"bench compare: --steps must be at least 1, got {steps}")
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = _build(specs)
    _say(f"built {', '.join(run.result.label for run in runs)}")
    for run in runs:
        _warm_up(run, warmup)
        _say(f"{run.result.label}: FLOPs counted, warmed up")
    for index in range(steps):
        for run in runs:
            _timed_step(run)
        _say(f"round {index + 1}/{steps} timed")
    for run in runs:
        _profile(run, out)
        run.result.host_syncs = _sync_check(run)
    _say("profiled")
    device = runs[0].device
    peaks = {dtype: matmul_peak(device, dtype) for dtype in {_matmul_dtype(r.result.precision) for r in runs}}
    _summarise(runs, peaks)
    from kgvlp.engine.backend import describe_device
    report = {
        "command": " ".join(["kgvlp", *sys.argv[1:]]) if sys.argv and "kgvlp" in sys.argv[0] else None,
        "started": started.isoformat(timespec="seconds"),
        "device": describe_device(device),
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
        "steps": steps, "warmup": warmup,
        "matmul_peak_tflops": {str(d).removeprefix("torch."): p / 1e12 for d, p in peaks.items()},
        "runs": [dataclasses.asdict(run.result) for run in runs],
    }
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    del runs
    gc.collect()
    return report


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(width=200)
    peaks = ", ".join(f"{d} {p:.2f} TFLOP/s" for d, p in report["matmul_peak_tflops"].items())
    table = Table(title=f"kgvlp bench compare — {report['device']}, {report['steps']} interleaved rounds after "
                        f"{report['warmup']} warm-up, load {report['load_average'][0]:.1f}, matmul peak {peaks}")
    columns = ("run", "pairs/s", "× reference (rounds)", "step ms (min–max)", "peak GB", "GFLOP/pair", "MFU",
               "host syncs", "graph breaks")
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "host syncs") else "right")
    for r in report["runs"]:
        ratio = (f"{r['ratio_to_reference']:.2f} ({r['round_ratio_range'][0]:.2f}–{r['round_ratio_range'][1]:.2f})"
                 if r["reference"] else "1.00")
        table.add_row(r["label"], f"{r['pairs_per_s']:.1f}", ratio,
                      f"{r['step_ms']:.1f} ({r['step_ms_range'][0]:.0f}–{r['step_ms_range'][1]:.0f})",
                      f"{r['peak_memory_gb']:.2f}", f"{r['flop_per_pair'] / 1e9:.2f}", f"{r['mfu']:.1%}",
                      str(r["host_syncs"]), str(r["graph_breaks"]))
    console.print(table)
    split = Table(title="one profiled step per run (ms; forward holds encode and the objectives)")
    for column in ("run", "phase", "ms", "% of step"):
        split.add_column(column, justify="left" if column in ("run", "phase") else "right")
    for r in report["runs"]:
        whole = sum(r["split_ms"].get(k, 0.0) for k in ("forward", "backward", "optimizer")) or 1.0
        for phase, ms in r["split_ms"].items():
            split.add_row(r["label"], phase, f"{ms:.1f}", f"{ms / whole:.0%}")
    console.print(split)
    if report["runs"] and report["runs"][0]["trace"]:
        console.print(f"chrome traces and compare.json: {Path(report['runs'][0]['trace']).parent}")


def default_out() -> Path:
    return Path(f"runs/bench-compare-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def markdown_table(report: dict) -> str:
    """The report as a Markdown table (README, docs), the split as each phase's share."""
    lines = ["| run | pairs/s | × reference | step ms | GFLOP/pair | MFU | peak GB | split of one step | host syncs | graph breaks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for r in report["runs"]:
        split = r["split_ms"]
        whole = sum(split.get(k, 0.0) for k in ("forward", "backward", "optimizer")) or 1.0
        parts = [(k.removeprefix("objective/"), v) for k, v in split.items()
                 if k in ("encode", "backward", "optimizer") or k.startswith("objective/")]
        if "encode" not in split:   # the reference: its forward is the encoders
            parts.insert(0, ("forward", split.get("forward", 0.0)))
        shares = " · ".join(f"{name} {ms / whole:.0%}" for name, ms in parts)
        ratio = f"{r['ratio_to_reference']:.2f}" if r["reference"] else "1.00"
        lines.append(f"| {r['label']} | {r['pairs_per_s']:.1f} | {ratio} | {r['step_ms']:.0f} | "
                     f"{r['flop_per_pair'] / 1e9:.2f} | {r['mfu']:.1%} | {r['peak_memory_gb']:.2f} | {shares} | "
                     f"{r['host_syncs']} | {r['graph_breaks']} |")
    return "\n".join(lines)
