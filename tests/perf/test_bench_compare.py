"""``kgvlp bench compare``: one command times each stack against a plain contrastive step on
the same encoders, in one process, and reports every figure in compare.json — at tiny sizes
on the CPU (MGCA demo, MLIP demo, PRIOR demo in stage 3 and in stage 1)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kgvlp.bench import bench_context
from kgvlp.cli import main
from kgvlp.config import load_experiment
from kgvlp.config.loader import ConfigError
from kgvlp.perf.compare import RunResult, parse_runs
from kgvlp.perf.reference import ReferenceStep
from kgvlp_tiny import make_batch
from mlip import helpers as mlip

from perf.test_host_syncs import TINY

# Smaller still than the host-sync test's stacks: 16 tokens, and PRIOR on the 2-block ViT.
BATCH = ["data.batch_size=4", "model.text.max_length=16"]
PRIOR = "configs/experiments/prior_demo.yaml " + " ".join(TINY["prior_demo"] + BATCH + ["model.image.name=vit_test"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core machine, spinning OpenMP workers made these
    tiny steps ~20x slower in CPU time (0.06 s vs 1.7 s per step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    bank = tmp_path_factory.mktemp("bank")
    mlip.write_bank(bank)
    mlip_run = " ".join(["configs/experiments/mlip_demo.yaml", *TINY["mlip_demo"], *BATCH, "as=mlip",
                         f"data.knowledge_embeddings={bank / 'embeddings'}",
                         f"data.knowledge_graph={bank / 'graph.json'}"])
    out = tmp_path_factory.mktemp("compare")
    status = main(["bench", "compare", "configs/experiments/demo.yaml", *TINY["demo"], *BATCH,
                   "--also", mlip_run, "--also", f"{PRIOR} as=prior-stage3",
                   "--also", f"{PRIOR} as=prior-stage1 stage=stage1",
                   "--steps", "1", "--warmup", "0", "--out", str(out)])
    assert status == 0
    return json.loads((out / "compare.json").read_text())


def runs(report) -> dict[str, dict]:
    return {run["label"]: run for run in report["runs"]}


def test_the_report_has_every_field_for_every_run_and_a_trace_each(report):
    fields = set(RunResult.__dataclass_fields__)

    assert [r["label"] for r in report["runs"]] == [
        "reference", "demo", "mlip", "reference (prior-stage3)", "prior-stage3", "prior-stage1"]
    for run in report["runs"]:
        assert set(run) == fields
        assert run["pairs_per_s"] > 0 and run["flop_per_pair"] > 0 and 0 < run["mfu"]
        assert run["peak_memory_gb"] > 0
        assert run["host_syncs"] == run["graph_breaks"] == "n/a (CPU)"
        assert json.loads(Path(run["trace"]).read_text())["traceEvents"]
    assert report["matmul_peak_tflops"]["float32"] > 0 and len(report["load_average"]) == 3


def test_each_stack_is_measured_against_the_reference_on_its_encoders_in_the_same_rounds(report):
    by_label = runs(report)

    for run in report["runs"]:
        if run["kind"] == "reference":
            continue
        reference = by_label[run["reference"]]
        assert run["ratio_to_reference"] == pytest.approx(run["pairs_per_s"] / reference["pairs_per_s"])
        assert run["pairs_per_s"] == pytest.approx(run["batch_size"] / run["step_ms"] * 1e3)
    # MGCA and MLIP share encoders (ViT test, MiniLM): one reference; PRIOR's are its own.
    assert by_label["demo"]["reference"] == by_label["mlip"]["reference"] == "reference"
    assert by_label["prior-stage1"]["reference"] == "reference (prior-stage3)"


def test_the_profiled_split_names_every_active_objective_and_each_phase(report):
    for run in report["runs"]:
        assert {"forward", "backward", "optimizer", "encode/image", "encode/text"} <= set(run["split_ms"])
        if run["kind"] == "stack":
            assert {f"objective/{name}" for name in run["active_objectives"]} <= set(run["split_ms"])
    assert runs(report)["mlip"]["active_objectives"] == [
        "mlip_global", "tkp_alignment", "category_contrast", "itm", "text_swap"]


def test_a_prior_stage_one_step_counts_fewer_flops_than_a_stage_three_step(report):
    stage1, stage3 = runs(report)["prior-stage1"], runs(report)["prior-stage3"]

    assert stage1["active_objectives"] == ["prior_global", "prior_local"]
    assert "objective/prototype_generation" not in stage1["split_ms"]
    assert stage1["flop_per_pair"] < stage3["flop_per_pair"]


def test_the_reference_step_trains(tokenizer, reports):
    cfg = load_experiment("configs/experiments/demo.yaml", TINY["demo"] + ["trainer.lr=1e-3"]).config
    torch.manual_seed(0)
    reference = ReferenceStep(cfg, torch.device("cpu"))
    batch = make_batch(tokenizer, reports, size=4)

    losses = [reference.step(batch).item() for _ in range(4)]

    assert losses[-1] < losses[0] / 2, losses      # 1.37 → 0.10 when written


def test_runs_are_the_positional_experiment_then_each_also_with_bench_words_taken_out():
    specs = parse_runs("a.yaml", ["x=1", "as=A"], ["y=2", "b.yaml as=B stage=s1 z=3"])

    assert [(s.label, s.experiment, s.overrides, s.stage) for s in specs] == [
        ("A", "a.yaml", ["x=1"], None), ("a y=2", "a.yaml", ["x=1", "y=2"], None),
        ("B", "b.yaml", ["x=1", "z=3"], "s1")]
    with pytest.raises(ValueError, match="share a label"):
        parse_runs("a.yaml", [], ["as=a"])


def test_a_stage_the_experiment_lacks_is_refused_naming_its_stages():
    cfg = load_experiment("configs/experiments/prior_demo.yaml", TINY["prior_demo"]).config

    assert bench_context(cfg, "stage1").weights["prototype_generation"] == 0
    with pytest.raises(ConfigError, match=r"stage=stage9: prior_demo has stages \['stage1', 'stage2', 'stage3'\]"):
        bench_context(cfg, "stage9")
