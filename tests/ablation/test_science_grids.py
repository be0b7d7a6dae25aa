"""The issue-17 science grids load as written, and a grid's eval.synth (the downstream set's
SynthCXR knobs) is checked when the grid loads."""
from __future__ import annotations

from pathlib import Path

import pytest

from ablation_fixtures import write_grid
from kgvlp.ablation.grid import GridError, load_grid

GRIDS = Path(__file__).resolve().parents[2] / "experiments" / "grids"


@pytest.mark.parametrize("name, arms", [
    ("science_mgca", ["ITA", "ITA+CTA", "ITA+CPA", "ITA+CTA+CPA"]),
    ("science_prior", ["global", "+local", "+prototypes", "+reconstruction+generation"]),
    ("science_mlip", ["MGCA", "MGCA+MLIP"]),
])
def test_each_science_grid_has_its_arms_times_five_seeds_against_the_first(name, arms):
    grid = load_grid(GRIDS / f"{name}.yaml")

    assert [run.axes["objectives"] for run in grid.runs] == [a for a in arms for _ in range(5)]
    assert grid.spec.baseline == {"objectives": arms[0]}
    assert grid.spec.eval.synth_n == 40000 and grid.spec.eval.synth_seed == 1


def test_eval_synth_knobs_are_validated_at_load(tmp_path):
    with pytest.raises(GridError, match=r"eval.synth.omit_from_report' \(did you mean 'omit_from_reports'\?\)"):
        load_grid(write_grid(tmp_path, {"seed": [0]}, eval={"synth": {"omit_from_report": []}}))
    with pytest.raises(GridError, match=r"'eval.synth.label_noise': expected a value in \[0.0, 0.5\]"):
        load_grid(write_grid(tmp_path, {"seed": [0]}, eval={"synth": {"label_noise": 0.9}}))
    grid = load_grid(write_grid(tmp_path, {"seed": [0]}, eval={"synth": {"omit_from_reports": []}}))
    assert grid.spec.eval.synth == {"omit_from_reports": []}
