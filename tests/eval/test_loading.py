"""Evaluating from run folders: the right model comes back, and a wrong architecture, a
missing weights file or an incomplete dataset folder fail naming what was expected."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from eval_fixtures import make_tiny_model
from kgvlp.eval import CheckpointError, EvalDataError, evaluate
from kgvlp.eval.cli import register
from kgvlp.eval.loading import load_trained

RUN_CONFIG = """
model:
  image: {name: vit_test, image_size: 64}
  text: {max_length: 32, num_layers: 2}
data: {image_size: 64}
objectives:
  ita: {}
  cta: {}
"""


def write_run(folder: Path, model) -> Path:
    (folder / "final").mkdir(parents=True)
    (folder / "config.yaml").write_text(RUN_CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "final" / "model.safetensors"))
    return folder


def test_run_folder_loads_the_saved_weights(tmp_path):
    saved = make_tiny_model(seed=3)
    model, _ = load_trained(write_run(tmp_path / "run", saved))
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_wrong_architecture_names_the_expected_one(tmp_path):
    run = write_run(tmp_path / "run", make_tiny_model(image="resnet_test"))   # config says vit_test
    with pytest.raises(CheckpointError, match="vit_test"):
        evaluate(run, {}, tasks=["linear_probe"], out_dir=tmp_path / "out", progress=False)


def test_missing_weights_name_the_expected_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(RUN_CONFIG)
    with pytest.raises(CheckpointError, match="final/model.safetensors"):
        evaluate(run, {}, tasks=["linear_probe"], out_dir=tmp_path / "out", progress=False)


def test_dataset_folder_without_cache_files_names_them(tiny_model, tmp_path):
    (tmp_path / "chexpert").mkdir()
    with pytest.raises(EvalDataError, match="info.json"):
        evaluate(tiny_model, str(tmp_path / "chexpert"), tasks=["linear_probe"], out_dir=tmp_path / "out",
                 baselines=False, progress=False)


def test_missing_split_is_named(tiny_model, tiny_splits, tmp_path):
    with pytest.raises(EvalDataError, match="'val'"):
        evaluate(tiny_model, {"train": tiny_splits["train"], "test": tiny_splits["test"]},
                 tasks=["linear_probe"], out_dir=tmp_path, baselines=False, progress=False)


def test_cli_evaluates_a_run_folder(tmp_path, tiny_splits, monkeypatch, capsys):
    import argparse
    import kgvlp.eval.data as eval_data
    run = write_run(tmp_path / "run", make_tiny_model(seed=1))
    monkeypatch.setattr(eval_data, "load_splits", lambda data, image_size, **kw: {
        s: eval_data.EvalView(d) for s, d in tiny_splits.items()})
    import kgvlp.eval as eval_api
    monkeypatch.setattr(eval_api, "load_splits", eval_data.load_splits)
    parser = argparse.ArgumentParser(prog="kgvlp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(run), "--task", "linear_probe", "--fractions", "1", "--seeds", "0",
                              "--max-epochs", "2", "--no-progress", "--data", "tiny"])
    assert args.func(args) == 0
    assert (run / "eval" / "linear_probe.json").is_file()
    assert "| trained |" in capsys.readouterr().out


def test_cli_reports_a_wrong_checkpoint_without_a_traceback(tmp_path, capsys):
    import argparse
    run = write_run(tmp_path / "run", make_tiny_model(image="resnet_test"))
    parser = argparse.ArgumentParser(prog="kgvlp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", str(run), "--task", "linear_probe", "--no-progress"])
    assert args.func(args) == 2
    assert "vit_test" in capsys.readouterr().err
