"""Hostile experiment YAML: tags that would run code, unknown resolvers, Hydra's ``_target_``,
alias bombs and binary files are refused at load time with one line naming the file (or
the key), and nothing runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from kgvlp.ablation.grid import GridError, load_grid
from kgvlp.config import ConfigError, load_experiment


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def touch_tag(marker: Path) -> str:
    """A PyYAML tag that, under an unsafe loader, creates ``marker``."""
    return f'name: !!python/object/apply:os.system ["touch {marker}"]\n'


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_python_tag_in_an_experiment_is_refused_naming_the_file_and_line(tmp_path):
    marker = tmp_path / "MARKER"
    experiment = write(tmp_path, "exp.yaml", "seed: 0\n" + touch_tag(marker))

    with pytest.raises(ConfigError) as error:
        load_experiment(experiment)

    assert one_line(error).startswith(f"{experiment}, line 2: YAML tag ")
    assert "python/object/apply:os.system" in str(error.value) and "refused" in str(error.value)
    assert not marker.exists()


def test_a_python_tag_in_a_bases_file_is_refused_naming_the_base(tmp_path):
    marker = tmp_path / "MARKER"
    base = write(tmp_path, "base.yaml", touch_tag(marker))
    experiment = write(tmp_path, "exp.yaml", "bases: [base.yaml]\nseed: 1\n")

    with pytest.raises(ConfigError) as error:
        load_experiment(experiment)

    assert one_line(error).startswith(f"{base}, line 1: YAML tag ")
    assert not marker.exists()


def test_a_python_tag_in_a_grids_base_is_refused_naming_the_base(tmp_path):
    marker = tmp_path / "MARKER"
    base = write(tmp_path, "base.yaml", touch_tag(marker))
    grid = write(tmp_path, "grid.yaml", "name: g\nbase: base.yaml\naxes: {seed: [0, 1]}\n")

    with pytest.raises(GridError) as error:
        load_grid(grid)

    assert f"{base}, line 1: YAML tag " in one_line(error)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["file", "override"])
def test_an_unknown_resolver_is_refused_naming_the_key(tmp_path, where):
    text = "trainer: {max_steps: '${nosuch:x}'}\n" if where == "file" else "seed: 0\n"
    experiment = write(tmp_path, "exp.yaml", text)
    overrides = ["trainer.max_steps=${nosuch:x}"] if where == "override" else []

    with pytest.raises(ConfigError) as error:
        load_experiment(experiment, overrides)

    assert one_line(error).startswith("config key 'trainer.max_steps': Unsupported interpolation type nosuch")


def test_a_target_key_is_refused_naming_the_file_and_key(tmp_path):
    experiment = write(tmp_path, "exp.yaml", "objectives:\n  ita: {weight: 1.0, _target_: os.system}\n")

    with pytest.raises(ConfigError) as error:
        load_experiment(experiment)

    assert one_line(error).startswith(f"{experiment}: config key 'objectives.ita._target_' refused")


def test_a_target_key_on_the_command_line_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: config key 'model.services.divergence._target_' refused"):
        load_experiment(None, ["model.services.divergence._target_=os.system"])


def test_an_alias_bomb_is_refused_naming_the_file(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(6)]
    experiment = write(tmp_path, "bomb.yaml", "\n".join(levels) + "\n")

    with pytest.raises(ConfigError) as error:
        load_experiment(experiment)

    assert one_line(error).startswith(f"{experiment}, line 1: not valid YAML: YAML node expansion exceeds")


def test_a_binary_file_is_refused_naming_the_file(tmp_path):
    experiment = write(tmp_path, "exp.yaml", b"\x89PNG\r\n\x1a\n\x00\xff\xfe")

    with pytest.raises(ConfigError) as error:
        load_experiment(experiment)

    assert one_line(error).startswith(f"{experiment}")
