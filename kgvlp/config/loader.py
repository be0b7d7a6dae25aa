"""Load an experiment: YAML bases → the file → command-line overrides, validated in struct mode."""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, UnsupportedInterpolationType

from kgvlp.config.synth_knobs import synth_range_problem
from kgvlp.config.schema import ExperimentConfig
from kgvlp.files import write_text_atomic

BASES_KEY = "bases"


class ConfigError(ValueError):
    """A configuration problem found at load time, before anything runs."""


@dataclass
class LoadedExperiment:
    """``config``: the validated tree (typed ExperimentConfig; ``objectives`` holds each
    objective's typed Config instance); ``tree``: the resolved DictConfig that is saved."""
    config: ExperimentConfig
    tree: DictConfig
    source: Path | None


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: base files include each other: {' → '.join(map(str, seen + (path,)))}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: expected an experiment YAML file")
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist")
    node = read_yaml(path)
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    refuse_targets(node, str(path))
    bases = node.pop(BASES_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, _read_with_bases((path.parent / base), seen + (path,)))
    return OmegaConf.merge(merged, node)


def read_yaml(path: Path) -> DictConfig | ListConfig:
    """``path`` as plain YAML (omegaconf's safe loader): a ``!!python/…`` tag, a syntax error,
    an alias bomb or bytes that are not UTF-8 are a ConfigError naming the file and line."""
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]
        if "constructor for the tag" in problem:
            raise ConfigError(f"{path}{_line(err)}: YAML tag {problem.rsplit(' ', 1)[-1]} refused: experiment "
                              "files are plain YAML (mappings, lists, numbers, strings); nothing is "
                              "constructed from a tag") from None
        raise ConfigError(f"{path}{_line(err)}: not valid YAML: {problem.split('. See ')[0]}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}): expected a YAML experiment file") from None
    except ValueError as err:   # omegaconf's limits on alias expansion and recursive aliases
        raise ConfigError(f"{path}: {str(err).splitlines()[0]}") from None


def _line(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f", line {mark.line + 1}" if mark is not None else ""


# Hydra's instantiation key: a config naming a class or function to call. kgvlp builds only
# the classes its registries list, so the key is refused wherever it appears.
TARGET_KEY = "_target_"


def refuse_targets(node: Any, source: str, prefix: str = "") -> None:
    """ConfigError naming ``source`` and the key if any mapping under ``node`` has ``_target_``."""
    if isinstance(node, DictConfig):
        items = ((str(k), node._get_node(k)) for k in node)
    elif isinstance(node, ListConfig):
        items = ((f"[{i}]", node._get_node(i)) for i in range(len(node)))
    else:
        return
    for key, child in items:
        where = f"{prefix}.{key}".lstrip(".") if not key.startswith("[") else f"{prefix}{key}"
        if key == TARGET_KEY:
            raise ConfigError(f"{source}: config key {where!r} refused: kgvlp never instantiates a class "
                              "named in a config; objectives and services are chosen by their registered names")
        refuse_targets(child, source, where)


def _valid_keys(schema_node: Any) -> list[str]:
    return sorted(schema_node.keys()) if isinstance(schema_node, DictConfig) else []


def _explain(err: OmegaConfBaseException, schema: DictConfig, where: str = "") -> ConfigError:
    """Turn an omegaconf error into one naming the full key and the valid choices.
    ``where`` prefixes keys of a sub-schema (an objective's Config) for display."""
    key = getattr(err, "full_key", "") or ""
    parent_key, _, leaf = key.rpartition(".")
    shown, shown_parent = f"{where}{key}", f"{where}{parent_key}".rstrip(".")
    if isinstance(err, ConfigKeyError):
        node = OmegaConf.select(schema, parent_key) if parent_key else schema
        valid = _valid_keys(node)
        entry = getattr(err, "object_type", None)
        if (not parent_key and entry is not None and dataclasses.is_dataclass(entry)
                and entry is not OmegaConf.get_type(schema)):
            # an entry of a list (trainer.stages[i]): omegaconf loses the path, the type says
            # which entry it was
            valid = sorted(field.name for field in dataclasses.fields(entry))
            close = difflib.get_close_matches(leaf, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return ConfigError(f"unknown config key {leaf!r} in a list entry of type {entry.__name__}{hint}; "
                               f"valid keys there: {', '.join(valid)}")
        close = difflib.get_close_matches(leaf, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"unknown config key {shown!r}{hint}; valid keys under "
                           f"{shown_parent or 'the top level'}: {', '.join(valid)}")
    message = str(getattr(err, "msg", err)).splitlines()[0]
    if isinstance(err, UnsupportedInterpolationType):
        message += " (kgvlp registers no resolvers: ${other.key} and omegaconf's oc.* resolvers work)"
    return ConfigError(f"config key {shown!r}: {message}")


def _validate_objectives(raw: DictConfig, registry: dict, where: str = "objectives",
                         kind: str = "objective") -> dict[str, Any]:
    """Check each ``where.<name>`` against ``registry[name].Config``; typed instances."""
    typed = {}
    for name, value in raw.items():
        if name not in registry:
            close = difflib.get_close_matches(str(name), list(registry), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {kind} {name!r} under '{where}'{hint}; "
                              f"valid choices: {', '.join(sorted(registry)) or 'none'}")
        schema = OmegaConf.structured(registry[name].Config)
        OmegaConf.set_struct(schema, True)
        try:
            merged = OmegaConf.merge(schema, value if value is not None else {})
        except OmegaConfBaseException as err:
            raise _explain(err, schema, where=f"{where}.{name}.") from None
        typed[name] = OmegaConf.to_object(merged)
    return typed


def _list_above(raw: DictConfig, key: str) -> tuple[str, int] | None:
    """(list key, its length) when a prefix of ``key`` is a list in ``raw``, else None."""
    parts = key.split(".")
    for end in range(1, len(parts)):
        node = OmegaConf.select(raw, ".".join(parts[:end]))
        if isinstance(node, ListConfig):
            return ".".join(parts[:end]), len(node)
    return None


def _update_list_entry(raw: DictConfig, key: str, value: str) -> None:
    where, length = _list_above(raw, key)
    index = key[len(where) + 1:].split(".")[0]
    if not index.isdigit() or int(index) >= length:
        raise ConfigError(f"override {key}={value}: {where} is a list of {length} entries; "
                          f"address one as {where}.<0..{length - 1}>.<key>")
    parsed = OmegaConf.from_dotlist([f"value={value}"]).value
    refuse_targets(OmegaConf.create({"value": parsed}), "command line")
    OmegaConf.update(raw, key, parsed, merge=True, force_add=True)


def load_experiment(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = (),
                    registry: dict | None = None) -> LoadedExperiment:
    """Merge ``path`` (and its ``bases``) with ``key=value`` overrides and validate everything."""
    if registry is None:
        from kgvlp.objectives import REGISTRY as registry
    raw = _read_with_bases(Path(path)) if path is not None else OmegaConf.create()
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r}: expected key=value")
    into_lists = [o for o in overrides if _list_above(raw, o.split("=", 1)[0])]
    try:
        overridden = OmegaConf.from_dotlist([o for o in overrides if o not in into_lists])
        refuse_targets(overridden, "command line")
        raw = OmegaConf.merge(raw, overridden)
        for override in into_lists:     # trainer.stages.1.lr=...: one entry of a list
            _update_list_entry(raw, *override.split("=", 1))
    except OmegaConfBaseException as err:
        raise ConfigError(f"overrides {list(overrides)}: {err}") from None
    schema = OmegaConf.structured(ExperimentConfig)
    OmegaConf.set_struct(schema, True)
    OmegaConf.set_struct(schema.objectives, False)  # names checked against the registry below
    OmegaConf.set_struct(schema.model.services, False)
    try:
        tree = OmegaConf.merge(schema, raw)
        OmegaConf.to_container(tree, resolve=True)   # every ${…} resolves now, or its key is named
    except OmegaConfBaseException as err:
        raise _explain(err, schema) from None
    objectives = _validate_objectives(tree.objectives, registry)
    from kgvlp.modules.registry import SERVICES
    services = _validate_objectives(tree.model.services, SERVICES, "model.services", "service")
    _link_knowledge_paths(tree, services, SERVICES)
    tree.objectives = OmegaConf.create({n: dataclasses.asdict(c) for n, c in objectives.items()})
    for stage in tree.trainer.stages:
        for name in stage.weights:
            if name not in objectives:
                raise ConfigError(f"trainer.stages[{stage.name}].weights names objective {name!r}, "
                                  f"which is not under 'objectives' ({', '.join(objectives) or 'none'})")
        if not any(weight > 0 for weight in stage.weights.values()):
            raise ConfigError(f"trainer.stages[{stage.name}].weights gives no objective a positive weight, "
                              f"so the stage would train nothing (a stage's weights replace "
                              f"objectives.<name>.weight); list some of: {', '.join(objectives) or 'none'}")
    if tree.data.image_size != tree.model.image.image_size:
        raise ConfigError(f"data.image_size ({tree.data.image_size}) must equal model.image.image_size "
                          f"({tree.model.image.image_size}); write data.image_size: "
                          "${model.image.image_size} to keep them together")
    _check_ranges(tree)
    _refuse_synced_official_heads(tree, objectives, registry)
    config = OmegaConf.to_object(tree)
    config.objectives = objectives
    config.model.services = services
    return LoadedExperiment(config=config, tree=tree, source=Path(path) if path else None)


# Numbers outside these ranges pass the type check but fail (or silently do nothing) later:
# key → (smallest allowed value, whether it may equal it). None (where the schema allows it)
# is not checked.
RANGES = {"data.batch_size": (1, True), "data.num_workers": (0, True), "data.synth_n": (1, True),
          "data.synth_image_size": (1, True), "data.resize": (1, True), "data.max_entities": (1, True),
          "data.max_sentences": (1, True), "data.max_samples": (1, True),
          "model.image.image_size": (1, True), "model.text.max_length": (2, True),
          "model.text.num_layers": (1, True), "model.text.sentence_slots": (1, True),
          "trainer.max_steps": (1, True), "trainer.max_epochs": (0, False), "trainer.lr": (0, False),
          "trainer.min_lr": (0, True), "trainer.weight_decay": (0, True), "trainer.warmup_ratio": (0, True),
          "trainer.warmup_start_lr": (0, True),
          "trainer.grad_accum": (1, True), "trainer.grad_clip": (0, True), "trainer.log_every": (1, True),
          "trainer.checkpoint_every": (0, True), "trainer.keep_checkpoints": (0, True)}


def check_synth_knobs(knobs: dict, where: str) -> None:
    """A mapping of SynthCXR knobs outside an experiment (a grid's eval.synth), checked as
    data.synth is: known keys, types, ranges."""
    from kgvlp.config.schema import SynthConfig
    schema = OmegaConf.structured(SynthConfig)
    try:
        merged = OmegaConf.merge(schema, knobs)
    except OmegaConfBaseException as err:
        raise _explain(err, schema, where=f"{where}.") from None
    problem = synth_range_problem(merged, where)
    if problem:
        raise ConfigError(problem)


def _check_ranges(tree: DictConfig) -> None:
    problem = synth_range_problem(tree.data.synth)
    if problem:
        raise ConfigError(problem)
    for key, (least, inclusive) in RANGES.items():
        value = OmegaConf.select(tree, key)
        if value is None or isinstance(value, bool):
            continue
        if value < least or (value == least and not inclusive):
            bound = f"≥ {least}" if inclusive else f"> {least}"
            raise ConfigError(f"config key {key!r}: expected a value {bound}, got {value}")
    if not 0 <= tree.trainer.warmup_ratio <= 1:
        raise ConfigError(f"config key 'trainer.warmup_ratio': expected a fraction in [0, 1], "
                          f"got {tree.trainer.warmup_ratio}")


def _refuse_synced_official_heads(tree: DictConfig, objectives: dict, registry: dict) -> None:
    """MGCA's official global heads normalise per GPU (encoder.py:17-33, plain BatchNorm1d
    under DDP); the shared heads follow ``model.sync_batchnorm``, so an objective reading
    them with ``official_quirks`` would silently use global statistics on several ranks."""
    if not tree.model.sync_batchnorm:
        return
    reads_heads = {"image_embed", "text_embed"}   # Need values of the shared projections
    for name, cfg in objectives.items():
        if getattr(cfg, "official_quirks", False) and reads_heads & {n.value for n in registry[name].requires}:
            raise ConfigError(f"objectives.{name}.official_quirks is true, but model.sync_batchnorm is true: "
                              "the official code's global heads use per-GPU BatchNorm statistics; set "
                              "model.sync_batchnorm: false to reproduce it, or official_quirks: false")


# The knowledge bank's files are named once, under data (the data side maps CUIs to rows of
# the same bank the model loads): model.services.knowledge_bank.<service key> follows
# data.<data key> and may only repeat it.
_KNOWLEDGE_LINKS = (("graph", "knowledge_graph"), ("embeddings", "knowledge_embeddings"), ("cache_dir", "cache_dir"))


def _link_knowledge_paths(tree: DictConfig, services: dict, registry: dict) -> None:
    if "knowledge_bank" not in registry or ("knowledge_bank" not in services and tree.data.entities == "none"):
        return
    bank = services.setdefault("knowledge_bank", registry["knowledge_bank"].Config())
    defaults = registry["knowledge_bank"].Config()
    for service_key, data_key in _KNOWLEDGE_LINKS:
        given, wanted = getattr(bank, service_key), tree.data[data_key]
        if given not in (getattr(defaults, service_key), wanted):
            raise ConfigError(f"model.services.knowledge_bank.{service_key} ({given!r}) differs from "
                              f"data.{data_key} ({wanted!r}): set the path once, under data.{data_key}")
        setattr(bank, service_key, wanted)
    tree.model.services["knowledge_bank"] = OmegaConf.create(dataclasses.asdict(bank))


def save_resolved(tree: DictConfig, path: str | os.PathLike) -> None:
    """Write the fully resolved config atomically (temp file + rename)."""
    write_text_atomic(path, OmegaConf.to_yaml(tree, resolve=True))
