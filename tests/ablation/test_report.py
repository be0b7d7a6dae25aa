"""The report's numbers against values computed by hand, and its files; checkpoint
retention; SLURM → torch.distributed variables."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from kgvlp.ablation.grid import CheckpointPolicy
from kgvlp.ablation.report import paired_differences, summarize, write_report
from kgvlp.ablation.runner import prune_checkpoints
from kgvlp.ablation.executors.slurm import distributed_env, first_host
from kgvlp.ablation.state import write_json

# Two configurations × 3 seeds of one metric.
#   base: 1, 2, 3         mean 2,   std 1
#   full: 2, 4, 5         mean 11/3, std sqrt(7/3)
#   differences 1, 2, 2:  mean 5/3, std sqrt(1/3), t = (5/3) / (sqrt(1/3)/sqrt(3)) = 5, df 2,
#   two-sided p = 1 - t/sqrt(t² + 2) = 1 - 5/sqrt(27)   (Student t with 2 degrees of freedom)
BASE, FULL = [1.0, 2.0, 3.0], [2.0, 4.0, 5.0]


def tidy(metric: str = "auroc") -> pd.DataFrame:
    rows = [{"run_id": f"{config}{seed}", "objectives": config, "seed": str(seed), "state": "done",
             "metric": metric, "value": value}
            for config, values in (("ITA", BASE), ("ALL", FULL)) for seed, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_mean_and_sample_std_over_seeds():
    stats = summarize(tidy(), ["objectives"]).set_index("config")

    assert stats.loc["ITA", "mean"] == pytest.approx(2.0)
    assert stats.loc["ITA", "std"] == pytest.approx(1.0)
    assert stats.loc["ALL", "mean"] == pytest.approx(11 / 3)
    assert stats.loc["ALL", "std"] == pytest.approx(math.sqrt(7 / 3))
    assert stats.loc["ALL", "n"] == 3


def test_paired_t_test_over_seeds_matches_hand_computation():
    row = paired_differences(tidy(), ["objectives"], "seed", "ITA").iloc[0]

    assert row.config == "ALL" and row.n == 3
    assert row.diff_mean == pytest.approx(5 / 3)
    assert row.diff_std == pytest.approx(math.sqrt(1 / 3))
    assert row.t == pytest.approx(5.0)
    assert row.p == pytest.approx(1 - 5 / math.sqrt(27))       # 0.0377


def test_pairs_are_matched_by_seed_not_by_order():
    frame = tidy().sample(frac=1.0, random_state=3)            # rows shuffled
    frame = frame[~((frame.objectives == "ALL") & (frame.seed == "0"))]   # one seed missing

    row = paired_differences(frame, ["objectives"], "seed", "ITA").iloc[0]

    assert row.n == 2
    assert row.diff_mean == pytest.approx(2.0)                 # (4-2) and (5-3)
    assert math.isnan(row.p)                                   # identical differences: no test


def fake_grid(folder, values: dict[str, list[float]]):
    """A grid folder with finished runs (results.json, metrics.jsonl) and no training."""
    runs = []
    for config, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            run_id = f"{config.lower().replace('+', '')}{seed}"
            runs.append({"run_id": run_id, "axes": {"objectives": config, "seed": str(seed)}, "overrides": []})
            write_json(folder / "runs" / run_id / "status.json", {"state": "done"})
            write_json(folder / "runs" / run_id / "results.json",
                       {"metrics": {"linear_probe/auroc@1%": value}, "train": {"train/loss/total": 2.0 - value}})
            (folder / "runs" / run_id / "metrics.jsonl").write_text(
                "\n".join(json.dumps({"step": s, "loss/total": 3.0 - s * value / 10}) for s in (1, 2, 3)) + "\n")
    write_json(folder / "grid.json", {"name": "fake", "axes": ["objectives", "seed"], "config_axes": ["objectives"],
                                      "seed_axis": "seed", "baseline": {"objectives": "ITA"}, "metrics": None,
                                      "runs": runs})


def test_report_writes_table_test_and_plots(tmp_path):
    fake_grid(tmp_path, {"ITA": BASE, "ITA+CTA": FULL})

    path = write_report(tmp_path, command="kgvlp ablate fake.yaml")
    text = path.read_text()

    assert "| linear_probe/auroc@1% | 2.000 ± 1.000 | 3.667 ± 1.528 |" in text
    assert "| linear_probe/auroc@1% | +1.667 ± 0.577 | 0.038 |" in text
    assert "kgvlp ablate fake.yaml" in text
    assert (tmp_path / "report" / "plots" / "bar_linear_probe_auroc_1pct.png").stat().st_size > 1000
    assert (tmp_path / "report" / "plots" / "loss_curves.png").stat().st_size > 1000
    tidy_csv = pd.read_csv(tmp_path / "results.csv")
    assert list(tidy_csv.columns) == ["run_id", "objectives", "seed", "state", "metric", "value"]
    assert len(tidy_csv) == 12                                 # 6 runs × 2 metrics


def test_checkpoints_keep_last_and_best_only(tmp_path):
    for step in (2, 4, 6, 8):
        (tmp_path / f"step_{step:07d}").mkdir()
    (tmp_path / "latest").write_text("step_0000008")
    scores = {"step_0000002": 3.0, "step_0000004": 1.0, "step_0000006": 2.0, "step_0000008": 2.5}

    kept = prune_checkpoints(tmp_path, CheckpointPolicy(keep_last=1, keep_best=1), scores)

    assert kept == ["step_0000004", "step_0000008"]
    assert sorted(p.name for p in tmp_path.glob("step_*")) == kept


def test_slurm_variables_become_explicit_ranks_and_devices():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "4",
           "SLURM_JOB_NODELIST": "gpu[03-04]", "SLURM_JOB_ID": "77"}

    all_four = distributed_env(env, visible_gpus=4)
    one_bound = distributed_env(env, visible_gpus=1)           # SLURM bound one GPU to this task

    assert (all_four["RANK"], all_four["WORLD_SIZE"], all_four["LOCAL_RANK"]) == ("5", "8", "1")
    assert one_bound["LOCAL_RANK"] == "0"
    assert all_four["MASTER_ADDR"] == "gpu03"
    assert all_four["MASTER_PORT"] == one_bound["MASTER_PORT"]
    assert first_host("cpu1,gpu[7,9]") == "cpu1"
