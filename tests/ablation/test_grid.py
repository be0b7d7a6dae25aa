"""Grid files: expansion (product, include/exclude), stable run ids, validation before launch."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from ablation_fixtures import write_grid
from kgvlp.ablation.grid import EvalSpec, GridError, load_grid
from kgvlp.ablation.state import run_dir

OBJECTIVES = {"ITA": {"objectives.cta.weight": 0, "objectives.cpa.weight": 0},
              "ITA+CTA": {"objectives.cpa.weight": 0},
              "ITA+CTA+CPA": {}}


def combos(grid) -> list[tuple]:
    return [tuple(run.axes.values()) for run in grid.runs]


def test_axes_combine_as_a_product(tmp_path):
    grid = load_grid(write_grid(tmp_path, {"objectives": OBJECTIVES, "seed": [0, 1]}))

    assert combos(grid) == [("ITA", "0"), ("ITA", "1"), ("ITA+CTA", "0"), ("ITA+CTA", "1"),
                            ("ITA+CTA+CPA", "0"), ("ITA+CTA+CPA", "1")]
    assert "objectives.cta.weight=0" in grid.runs[0].overrides and "seed=0" in grid.runs[0].overrides


def test_exclude_drops_matching_combinations_and_include_adds_some(tmp_path):
    path = write_grid(tmp_path, {"objectives": OBJECTIVES, "seed": [0, 1]},
                      exclude=[{"objectives": ["ITA+CTA", "ITA+CTA+CPA"], "seed": 1}],
                      include=[{"objectives": "ITA", "seed": 7}])
    grid = load_grid(path)

    assert combos(grid) == [("ITA", "0"), ("ITA", "1"), ("ITA+CTA", "0"), ("ITA+CTA+CPA", "0"), ("ITA", "7")]


def test_an_include_naming_some_axes_takes_every_level_of_the_others(tmp_path):
    path = write_grid(tmp_path, {"objectives": OBJECTIVES, "trainer.lr": [0.001]},
                      exclude=[{"objectives": "ITA"}], include=[{"objectives": "ITA", "trainer.lr": 0.01}])

    assert combos(load_grid(path)) == [("ITA+CTA", "0.001"), ("ITA+CTA+CPA", "0.001"), ("ITA", "0.01")]


def test_run_ids_are_stable_and_follow_the_resolved_config(tmp_path):
    first = load_grid(write_grid(tmp_path / "a", {"seed": [0, 1]}))
    again = load_grid(write_grid(tmp_path / "b", {"seed": [0, 1]}, name="renamed"))
    changed = load_grid(write_grid(tmp_path / "c", {"seed": [0, 1]}, overrides={"trainer.lr": 0.002}))

    assert [r.run_id for r in first.runs] == [r.run_id for r in again.runs]   # name/cache dir aside
    assert len({r.run_id for r in first.runs}) == 2
    assert not {r.run_id for r in first.runs} & {r.run_id for r in changed.runs}


def test_run_id_does_not_depend_on_how_a_value_is_reached(tmp_path):
    by_axis = load_grid(write_grid(tmp_path / "a", {"trainer.lr": [0.002]}))
    by_override = load_grid(write_grid(tmp_path / "b", {"seed": [0]}, overrides={"trainer.lr": 0.002}))

    assert by_axis.runs[0].run_id == by_override.runs[0].run_id


def test_an_axis_naming_an_unknown_key_fails_naming_it(tmp_path):
    with pytest.raises(GridError, match=r"axis 'trainer.max_stepz'.*unknown config key 'trainer.max_stepz'.*max_steps"):
        load_grid(write_grid(tmp_path, {"trainer.max_stepz": [1, 2]}))


def test_an_unknown_key_inside_a_named_level_fails_naming_axis_and_level(tmp_path):
    axes = {"objectives": {"ITA": {"objectives.cta.wieght": 0}}}
    with pytest.raises(GridError, match=r"axis 'objectives' level 'ITA'.*objectives\.cta\.wieght"):
        load_grid(write_grid(tmp_path, axes))


def test_a_wrong_typed_axis_value_fails_naming_the_value(tmp_path):
    with pytest.raises(GridError, match=r"axis 'trainer.max_steps' level 'many'.*trainer.max_steps"):
        load_grid(write_grid(tmp_path, {"trainer.max_steps": [4, "many"]}))


def test_a_grid_with_no_runs_after_exclusions_fails(tmp_path):
    path = write_grid(tmp_path, {"seed": [0, 1]}, exclude=[{"seed": [0, 1]}])
    with pytest.raises(GridError, match=r"no runs: all 2 combinations .* are excluded"):
        load_grid(path)


def test_two_axes_setting_the_same_key_fail(tmp_path):
    axes = {"seed": [0, 1], "seeds_again": {"a": {"seed": 3}}}
    with pytest.raises(GridError, match=r"duplicate axes: 'seed' and 'seeds_again' both set \['seed'\]"):
        load_grid(write_grid(tmp_path, axes))


def test_an_axis_written_twice_fails(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: twice\nbase: x.yaml\naxes:\n  seed: [0, 1]\n  seed: [2]\n")
    with pytest.raises(GridError, match="duplicate key 'seed'"):
        load_grid(path)


def test_a_repeated_value_within_an_axis_fails(tmp_path):
    with pytest.raises(GridError, match=r"axis 'seed' lists \['1'\] more than once"):
        load_grid(write_grid(tmp_path, {"seed": [0, 1, 1]}))


def test_rules_and_eval_and_top_level_keys_are_checked(tmp_path):
    with pytest.raises(GridError, match=r"exclude\[0\] names axis 'sed' \(did you mean 'seed'\?\)"):
        load_grid(write_grid(tmp_path / "a", {"seed": [0]}, exclude=[{"sed": 0}]))
    with pytest.raises(GridError, match=r"eval.tasks: unknown task\(s\) \['linear_prob'\]"):
        load_grid(write_grid(tmp_path / "b", {"seed": [0]}, eval={"tasks": ["linear_prob"]}))
    with pytest.raises(GridError, match=r"unknown grid key 'axis' \(did you mean 'axes'\?\)"):
        load_grid(write_grid(tmp_path / "c", {"seed": [0]}, axis={}))
    with pytest.raises(GridError, match=r"grid key 'resources.gpus_per_run'"):
        load_grid(write_grid(tmp_path / "d", {"seed": [0]}, resources={"gpus_per_run": "two"}))


def test_the_cli_reports_a_bad_grid_before_launching(tmp_path, capsys):
    from kgvlp.cli import main
    path = write_grid(tmp_path, {"trainer.max_stepz": [1]})

    assert main(["ablate", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "trainer.max_stepz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,runs,config_axes", [("mgca_ablation", 12, ["objectives"]),
                                                    ("mlip_evidence", 6, ["objectives"]),
                                                    ("mlip_fusion", 6, ["fusion"])])
def test_the_recorded_grids_are_valid(name, runs, config_axes):
    from ablation_fixtures import ROOT
    grid = load_grid(ROOT / "experiments" / f"{name}.yaml")

    assert len(grid.runs) == runs and grid.seed_axis == "seed" and grid.config_axes == config_axes


def test_the_eval_spec_chooses_the_downstream_synthcxr(tmp_path, monkeypatch):
    """eval.synth_n / eval.synth_seed reach kgvlp.eval.evaluate (a held-out, larger set)."""
    import kgvlp.eval
    from kgvlp.ablation import runner
    seen = {}
    monkeypatch.setattr(kgvlp.eval, "evaluate", lambda *args, **kwargs: seen.update(kwargs) or [])
    spec = {"eval": {**asdict(EvalSpec()), "synth_n": 20000, "synth_seed": 1}}
    runner._evaluate(tmp_path, spec)
    assert seen["data_kwargs"] == {"synth_n": 20000, "synth_seed": 1}
    runner._evaluate(tmp_path, {"eval": asdict(EvalSpec())})
    assert seen["data_kwargs"] == {}


def test_runs_the_grid_no_longer_lists_are_named_by_status_and_moved_by_prune(tmp_path, capsys):
    """Renaming an axis level leaves the old level's run folders behind: status names them
    (they are not in the report) and prune moves them aside, never deleting them."""
    from kgvlp.ablation.launch import prepare
    from kgvlp.cli import main
    grid_dir = tmp_path / "out"
    old = load_grid(write_grid(tmp_path, {"objectives": {"ITA": {"objectives.cta.weight": 0.0}}, "seed": [0]}))
    prepare(old, grid_dir)
    (run_dir(grid_dir, old.runs[0].run_id) / "log.txt").write_text("trained with the old level")
    new = load_grid(write_grid(tmp_path, {"objectives": {"ITA-only": {"objectives.cta.weight": 0.0,
                                                                        "objectives.cpa.weight": 0.0}},
                                          "seed": [0]}))
    prepare(new, grid_dir)
    orphan = old.runs[0].run_id

    assert main(["ablate", "status", str(grid_dir)]) == 0
    assert orphan in capsys.readouterr().out.replace("\n", "")

    assert main(["ablate", "prune", str(grid_dir)]) == 0
    assert (grid_dir / "orphans" / orphan / "log.txt").read_text() == "trained with the old level"
    assert sorted(p.name for p in (grid_dir / "runs").iterdir()) == [new.runs[0].run_id]
    assert main(["ablate", "status", str(grid_dir)]) == 0
    assert "no longer in the grid" not in capsys.readouterr().out
