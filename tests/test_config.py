"""Experiment configuration: merge order, validation at load time, and what a config builds."""
from __future__ import annotations

from pathlib import Path

import pytest

from kgvlp_tiny import IMAGE_SIZE, MAX_LENGTH
from kgvlp.config import ConfigError, load_experiment, save_resolved
from kgvlp.models.vlp import VLPModel
from kgvlp.objectives import REGISTRY
from kgvlp.objectives.cpa import CPAConfig

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"

TINY = f"""
model:
  image: {{name: vit_test, image_size: {IMAGE_SIZE}}}
  text: {{max_length: {MAX_LENGTH}, num_layers: 2}}
data: {{image_size: {IMAGE_SIZE}}}
objectives:
  ita: {{weight: 1.0}}
  cta: {{weight: 1.0, hidden_dim: 64}}
  cpa: {{weight: 1.0, num_prototypes: 8}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    return write(tmp_path, "tiny.yaml", TINY)


# ---------------------------------------------------------------------------------------
# errors at load time name the key and the valid choices


def test_unknown_objective_fails_naming_it_and_the_registered_objectives(tiny_yaml):
    with pytest.raises(ConfigError) as error:
        load_experiment(tiny_yaml, ["objectives.nosuch.weight=1"])

    message = str(error.value)
    assert "'nosuch'" in message
    assert all(name in message for name in REGISTRY)


def test_misspelt_trainer_key_fails_naming_it_and_the_valid_keys(tiny_yaml):
    with pytest.raises(ConfigError) as error:
        load_experiment(tiny_yaml, ["trainer.max_step=5"])

    message = str(error.value)
    assert "trainer.max_step" in message
    assert "did you mean 'max_steps'" in message
    assert "warmup_ratio" in message and "weight_decay" in message   # the valid keys are listed


def test_wrong_type_fails_naming_the_key(tiny_yaml):
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        load_experiment(tiny_yaml, ["trainer.max_epochs=many"])


def test_misspelt_objective_option_fails_naming_it_and_the_objectives_options(tiny_yaml):
    with pytest.raises(ConfigError) as error:
        load_experiment(tiny_yaml, ["objectives.cta.temprature=0.2"])

    message = str(error.value)
    assert "objectives.cta.temprature" in message and "temperature" in message


@pytest.mark.parametrize("objective", ["ita", "cpa"])
def test_official_quirks_on_the_shared_heads_refuse_synchronised_batchnorm_naming_both_keys(tiny_yaml, objective):
    # MGCA's official global heads normalise per GPU; model.sync_batchnorm would not.
    with pytest.raises(ConfigError) as error:
        load_experiment(tiny_yaml, [f"objectives.{objective}.official_quirks=true"])

    assert f"objectives.{objective}.official_quirks" in str(error.value)
    assert "model.sync_batchnorm" in str(error.value)
    config = load_experiment(tiny_yaml, [f"objectives.{objective}.official_quirks=true",
                                         "model.sync_batchnorm=false"]).config
    assert config.objectives[objective].official_quirks and not config.model.sync_batchnorm


def test_wrong_type_in_an_objective_option_fails_naming_the_key(tiny_yaml):
    with pytest.raises(ConfigError, match=r"objectives\.cpa\.num_prototypes"):
        load_experiment(tiny_yaml, ["objectives.cpa.num_prototypes=lots"])


@pytest.mark.parametrize("override, choices", [
    ("trainer.precision=fp8", "['fp32', 'bf16', 'bf16-weights', 'fp16']"),
    ("trainer.zero_stage=5", "[0, 1, 2, 3]"),
    ("trainer.device=tpu", "['auto', 'cpu', 'cuda']"),
    ("model.text.global_pool=max", "['cls', 'mean', 'sentence_attention']"),
    ("model.image.resnet_global_pool=max", "['avg', 'attention']"),
    ("model.image.name=vit_huge", "'vit_base_patch16'"),
    ("data.dataset=mimic", "'mimic_cxr'"),
    ("data.entities=scispacy", "['none', 'ground_truth', 'linker']"),
    ("eval.suite=everything", "['default', 'full', 'probe', 'text']"),
    ("objectives.tkp_alignment.fusion=bilinear", "['attention', 'tucker']"),
    ("objectives.itm.findings_from=reports", "['entities', 'labels', 'none']"),
    ("objectives.prototype_generation.matcher=cuda", "['torch', 'triton']"),
    ("model.services.divergence.schedule=linear", "['cosine', 'constant']"),
])
def test_a_value_outside_a_fixed_set_fails_at_load_time_naming_the_choices(tiny_yaml, override, choices):
    with pytest.raises(ConfigError) as error:
        load_experiment(tiny_yaml, [override])

    key, value = override.split("=")
    assert f"config key {key!r}" in str(error.value)
    assert f"Invalid value '{value}', expected one of" in str(error.value) and choices in str(error.value)


@pytest.mark.parametrize("override, expected", [
    ("data.batch_size=0", "expected a value ≥ 1, got 0"),
    ("trainer.max_steps=-1", "expected a value ≥ 1, got -1"),
    ("trainer.lr=0", "expected a value > 0, got 0.0"),
    ("trainer.warmup_ratio=2", "expected a fraction in [0, 1], got 2.0"),
])
def test_a_number_out_of_range_fails_at_load_time_naming_the_key(tiny_yaml, override, expected):
    with pytest.raises(ConfigError) as error:
        load_experiment(tiny_yaml, [override])

    assert str(error.value) == f"config key {override.split('=')[0]!r}: {expected}"


def test_a_folder_given_as_the_experiment_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is a folder: expected an experiment YAML file"):
        load_experiment(tmp_path)


def test_the_schemas_fixed_sets_are_the_registries_names():
    from typing import get_args

    from kgvlp.config.schema import EvalSuite, ImageEncoderName
    from kgvlp.eval.tasks import SUITES
    from kgvlp.models.image import IMAGE_ENCODERS

    assert sorted(get_args(ImageEncoderName)) == sorted(IMAGE_ENCODERS)
    assert sorted(get_args(EvalSuite)) == sorted(SUITES)


def test_stage_weight_naming_an_unknown_objective_fails(tmp_path):
    path = write(tmp_path, "staged.yaml", TINY + """
trainer:
  stages:
    - {name: first, steps: 10, weights: {ita: 1.0, itm: 1.0}}
""")

    with pytest.raises(ConfigError, match=r"trainer\.stages\[first\].*'itm'"):
        load_experiment(path)


def test_a_stage_that_weights_no_objective_fails_listing_the_objectives(tmp_path):
    path = write(tmp_path, "staged.yaml", TINY + """
trainer:
  stages:
    - {name: warm, steps: 10}
""")

    with pytest.raises(ConfigError, match=r"trainer\.stages\[warm\].*no objective a positive weight.*ita"):
        load_experiment(path)


def test_an_override_can_address_one_entry_of_a_list_and_a_wrong_index_or_key_is_named(tmp_path):
    path = write(tmp_path, "staged.yaml", TINY + """
trainer:
  stages:
    - {name: first, steps: 10, weights: {ita: 1.0}}
    - {name: second, steps: 10, weights: {ita: 1.0}}
""")

    stages = load_experiment(path, ["trainer.stages.1.lr=0.5", "trainer.stages.1.reset_optimizer=true"]).config.trainer.stages

    assert [(s.name, s.lr, s.reset_optimizer) for s in stages] == [("first", None, False), ("second", 0.5, True)]
    with pytest.raises(ConfigError, match=r"trainer\.stages is a list of 2 entries.*<0\.\.1>"):
        load_experiment(path, ["trainer.stages.2.lr=0.5"])
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr'.*StageConfig.*did you mean 'lr'"):
        load_experiment(path, ["trainer.stages.0.lrr=0.5"])


# ---------------------------------------------------------------------------------------
# merging


def test_bases_then_file_then_overrides(tmp_path):
    write(tmp_path, "base.yaml", "name: from_base\nseed: 1\ntrainer: {lr: 1.0e-3, max_epochs: 3}\n")
    path = write(tmp_path, "exp.yaml", "bases: [base.yaml]\nseed: 2\ntrainer: {lr: 2.0e-3}\n")

    config = load_experiment(path, ["trainer.lr=3.0e-3"]).config

    assert config.name == "from_base"          # only the base sets it
    assert config.seed == 2                    # the file beats its base
    assert config.trainer.lr == 3.0e-3         # overrides beat the file
    assert config.trainer.max_epochs == 3      # a sibling key from the base survives the file's merge


def test_objectives_get_their_typed_config_with_defaults_filled_in(tiny_yaml):
    config = load_experiment(tiny_yaml).config

    assert isinstance(config.objectives["cpa"], CPAConfig)
    assert config.objectives["cpa"].num_prototypes == 8
    assert config.objectives["cpa"].epsilon == CPAConfig.epsilon


def test_resolved_config_saved_and_reloaded_is_the_same_experiment(tiny_yaml, tmp_path):
    loaded = load_experiment(tiny_yaml, ["objectives.cta.weight=0.5"])

    save_resolved(loaded.tree, tmp_path / "run" / "config.yaml")
    again = load_experiment(tmp_path / "run" / "config.yaml")

    assert again.config == loaded.config


# ---------------------------------------------------------------------------------------
# what a config builds


def test_zero_weight_objective_builds_no_parameters(tiny_yaml):
    config = load_experiment(tiny_yaml, ["objectives.cpa.weight=0"]).config

    model = VLPModel(config.model, config.objectives, REGISTRY)

    assert "cpa" not in model.objectives.objectives
    assert not any("cpa" in name for name, _ in model.named_parameters())
    assert set(model.objectives.objectives) == {"ita", "cta"}


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_loads(path):
    loaded = load_experiment(path)

    assert loaded.config.objectives, f"{path.name} enables no objective"


def test_knowledge_bank_paths_are_set_once_under_data_and_followed_by_the_service():
    loaded = load_experiment(EXPERIMENTS / "mlip_demo.yaml",
                             ["data.knowledge_graph=g.json", "data.knowledge_embeddings=emb", "data.cache_dir=c"])
    bank = loaded.config.model.services["knowledge_bank"]
    assert (bank.graph, bank.embeddings, bank.cache_dir) == ("g.json", "emb", "c")
    assert loaded.tree.model.services.knowledge_bank.embeddings == "emb"   # what config.yaml records


def test_a_knowledge_bank_path_that_contradicts_data_fails_naming_both_keys():
    with pytest.raises(ConfigError, match=r"model.services.knowledge_bank.embeddings .*data.knowledge_embeddings"):
        load_experiment(EXPERIMENTS / "mlip_demo.yaml",
                        ["data.knowledge_embeddings=a", "model.services.knowledge_bank.embeddings=b"])
