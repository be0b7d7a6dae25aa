"""Hostile weights: pickle payloads in zip and legacy torch checkpoints and joblib files,
transformers folders with pickled weights or custom code, damaged safetensors and text
posing as weights. Each is refused with one line naming the file, through every command
that reads weights (exit 2, no traceback), and the payload never runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hostile.payloads import (hf_with_custom_code, hf_with_pickled_weights, joblib_file, torch_legacy,
                              torch_zip)
from kgvlp.cli import main
from kgvlp.models.weights import WeightsError, read_state_dict

TINY = ["model.image.name=vit_test", "model.image.image_size=32", "model.text.max_length=24",
        "model.text.num_layers=2", "objectives.ita.weight=1", "data.num_workers=0",
        "data.synth_n=40", "data.synth_image_size=32", "data.resize=36", "data.batch_size=4",
        "trainer.max_steps=1", "trainer.progress=false", "eval.at_end=false"]
RUN_CONFIG = ("model:\n  image: {name: vit_test, image_size: 32}\n  text: {max_length: 24, num_layers: 2}\n"
              "data: {image_size: 32}\nobjectives:\n  ita: {weight: 1.0}\n")


def experiment(folder: Path) -> str:
    path = folder / "experiment.yaml"
    path.write_text("seed: 0\n")
    return str(path)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER"


def refused(capsys, argv: list[str]) -> str:
    """Run ``kgvlp ARGV``; assert exit 2 with one line on stderr and no traceback; the line."""
    code = main(argv)
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("kgvlp: ")]   # not transformers' progress
    assert code == 2 and len(ours) == 1 and "Traceback" not in err, err
    assert "weights_only=False" not in ours[0] and "trust_remote_code" not in ours[0]
    return ours[0]


@pytest.mark.parametrize("make", [torch_zip, torch_legacy, joblib_file])
def test_a_pickle_payload_is_refused_naming_the_file(tmp_path, marker, make):
    payload = make(tmp_path / "weights.pt", marker)

    with pytest.raises(WeightsError) as error:
        read_state_dict(payload)

    assert str(error.value).startswith(f"{payload}: refused: it holds pickled Python objects")
    assert not marker.exists()


def test_damaged_and_foreign_files_are_refused_naming_them(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"weight": torch.zeros(64, 64)}, str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    checkpoint = tmp_path / "truncated.pt"
    torch.save({"weight": torch.zeros(64, 64)}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")

    for path, reason in ((truncated, "a damaged safetensors file"), (checkpoint, "refused: not a readable torch"),
                         (text, "not a weights file (named .safetensors, but its header is not one)")):
        with pytest.raises(WeightsError) as error:
            read_state_dict(path)
        assert str(error.value).startswith(f"{path}: {reason}")


@pytest.mark.parametrize("option", ["model.image.weights", "model.init_from"])
def test_train_refuses_a_payload_as_starting_weights_in_one_line(tmp_path, marker, capsys, option):
    payload = torch_zip(tmp_path / "start.pt", marker)

    line = refused(capsys, ["train", experiment(tmp_path), *TINY, f"{option}={payload}",
                            f"data.cache_dir={tmp_path}/cache", f"out_dir={tmp_path}/runs"])

    assert line.startswith(f"kgvlp: {payload}: refused: it holds pickled Python objects (posix.system)")
    assert not marker.exists()


def test_train_refuses_a_text_folder_with_pickled_weights(tmp_path, marker, capsys):
    folder = hf_with_pickled_weights(tmp_path / "text", marker)

    line = refused(capsys, ["train", experiment(tmp_path), *TINY, f"model.text.path={folder}",
                            f"out_dir={tmp_path}/runs"])

    assert line.startswith(f"kgvlp: model.text.path: {folder}: refused: it holds pickled Python objects")
    assert not marker.exists()


def test_train_refuses_a_text_folder_that_asks_for_custom_code(tmp_path, marker, capsys):
    folder = hf_with_custom_code(tmp_path / "text", marker)

    line = refused(capsys, ["train", experiment(tmp_path), *TINY, f"model.text.path={folder}",
                            f"out_dir={tmp_path}/runs"])

    assert line.startswith(f"kgvlp: model.text.path: {folder / 'config.json'} asks for custom model code")
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_holding_a_payload(tmp_path, marker, capsys):
    run = tmp_path / "run"
    step = run / "checkpoints" / "step_0000001"
    step.mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step_0000001")
    torch_zip(step / "mp_rank_00_model_states.pt", marker)

    line = refused(capsys, ["train", experiment(tmp_path), *TINY, "trainer.max_steps=2",
                            f"data.cache_dir={tmp_path}/cache", "--resume", str(run)])

    assert line.startswith(f"kgvlp: {step / 'mp_rank_00_model_states.pt'}: refused: it holds pickled")
    assert not marker.exists()


@pytest.fixture
def run_with_damaged_weights(tmp_path) -> Path:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(RUN_CONFIG)
    (run / "final" / "model.safetensors").write_bytes(b"\xff" * 64)   # "header too large" to safetensors
    return run


def test_export_and_kgvlp_load_name_a_damaged_weights_file(run_with_damaged_weights, tmp_path, capsys):
    import kgvlp
    weights = run_with_damaged_weights / "final" / "model.safetensors"

    line = refused(capsys, ["export", str(run_with_damaged_weights), "--out", str(tmp_path / "out")])
    with pytest.raises(WeightsError) as error:
        kgvlp.load(run_with_damaged_weights)

    assert line.startswith(f"kgvlp: {weights}: not a weights file")
    assert str(error.value).startswith(f"{weights}: not a weights file")


def test_debug_shows_the_traceback(run_with_damaged_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("KGVLP_DEBUG", "1")

    with pytest.raises(WeightsError):
        main(["export", str(run_with_damaged_weights), "--out", str(tmp_path / "out")])
    monkeypatch.delenv("KGVLP_DEBUG")
    with pytest.raises(WeightsError):
        main(["--debug", "export", str(run_with_damaged_weights), "--out", str(tmp_path / "out")])


def test_kgvlp_load_names_a_damaged_export_manifest(tmp_path):
    import kgvlp
    from kgvlp.export import MANIFEST, ExportError
    (tmp_path / MANIFEST).write_bytes(b"\x80\x04payload")

    with pytest.raises(ExportError) as error:
        kgvlp.load(tmp_path)

    assert str(error.value).startswith(f"{tmp_path / MANIFEST}: not the JSON manifest kgvlp export writes")
