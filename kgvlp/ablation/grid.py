"""Grid files: a base experiment plus axes of config overrides, expanded into runs.

    name: mgca_ablation
    base: ../configs/experiments/demo.yaml      # relative to this file
    overrides: {trainer.max_steps: 60}          # every run
    axes:
      objectives:                               # named levels: each a mapping of overrides
        ITA: {objectives.cta.weight: 0, objectives.cpa.weight: 0}
        ITA+CTA+CPA: {}
      seed: [0, 1, 2]                           # a config key: the values it takes
    exclude: [{objectives: ITA, seed: 2}]       # drop matching combinations
    include: [{objectives: ITA, trainer.lr: 1e-3}]   # extra combinations (unnamed axes: all levels)
    eval: {tasks: [linear_probe, grounding], fractions: [0.01, 0.1]}

Every run is validated with ``load_experiment`` before anything is launched; its id is a
hash of its resolved config, so the same configuration always lands in the same folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kgvlp.config import ConfigError, load_experiment


class GridError(ConfigError):
    """A grid file problem found before anything is launched."""


# Keys that do not change what a run computes: left out of the run id.
UNHASHED_KEYS = ("name", "out_dir", "data.cache_dir", "trainer.progress", "trainer.keep_checkpoints", "trainer.log_every",
                 "eval.at_end", "eval.out_subdir")


@dataclass
class EvalSpec:
    """The evaluation each trained encoder gets (kgvlp.eval.evaluate)."""
    enabled: bool = True
    tasks: Optional[List[str]] = None   # None = the suite's tasks
    suite: str = "default"
    data: str = "synthcxr"
    fractions: List[float] = field(default_factory=lambda: [0.01, 0.1])
    seeds: List[int] = field(default_factory=lambda: [0])
    max_epochs: int = 50
    baselines: bool = False             # random-init/start baselines per run (usually once is enough)
    # SynthCXR only: generate the downstream set with these (None = the run's data.synth_*);
    # another seed gives a held-out set, a larger n a larger labelled pool for 1%.
    synth_n: Optional[int] = None
    synth_seed: Optional[int] = None
    # SynthCXR difficulty knobs of the downstream set (data.synth keys, e.g. {omit_from_reports:
    # []}); None = the run's data.synth. Checked against the schema when the grid loads.
    synth: Any = None


@dataclass
class Resources:
    """Per run. Command-line flags (--gpus-per-run …) override the grid file."""
    gpus_per_run: int = 0               # GPUs per node of one run (0 = CPU)
    nodes_per_run: int = 1
    cpus_per_run: int = 2
    mem_gb: Optional[int] = None
    time_min: int = 60
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    max_requeues: int = 3               # SLURM: time-outs that requeue a run; Ray: task retries
    # local: runs at once (default 1); SLURM: array parallelism, Ray: tasks in flight (default all)
    concurrent: Optional[int] = None


@dataclass
class CheckpointPolicy:
    """Which ``checkpoints/step_*`` a run keeps: the newest ``keep_last`` and the
    ``keep_best`` with the best ``best_metric`` (a metrics.jsonl key) at their step."""
    keep_last: int = 1
    keep_best: int = 1
    best_metric: str = "loss/total"
    mode: Literal["min", "max"] = "min"


@dataclass
class GridFile:
    name: str = "grid"
    base: Optional[str] = None
    overrides: Any = None
    axes: Any = None
    include: Any = None
    exclude: Any = None
    eval: EvalSpec = field(default_factory=EvalSpec)
    resources: Resources = field(default_factory=Resources)
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    seed_axis: Optional[str] = None     # default: the axis named "seed", if any
    baseline: Any = None                # {axis: level} of the configuration others are compared to
    metrics: Optional[List[str]] = None # the report's metrics, in order (default: all)
    out_dir: Optional[str] = None       # default: runs/ablations/<name>


@dataclass
class Axis:
    """``levels``: label → {dotted key: value}. A key axis (``seed: [0, 1]``) has one key."""
    name: str
    levels: dict[str, dict[str, Any]]
    key: Optional[str] = None

    @property
    def keys(self) -> set[str]:
        return {k for overrides in self.levels.values() for k in overrides}


@dataclass
class RunSpec:
    run_id: str                          # hash of the resolved config (stable)
    axes: dict[str, str]                 # axis → level label
    overrides: list[str]                 # key=value for `kgvlp train BASE …`
    max_steps: Optional[int] = None


@dataclass
class Grid:
    name: str
    source: Path
    base: Path
    spec: GridFile
    axes: list[Axis]
    runs: list[RunSpec]
    seed_axis: Optional[str]

    @property
    def config_axes(self) -> list[str]:
        """The axes that define a configuration (all but the seed axis)."""
        return [a.name for a in self.axes if a.name != self.seed_axis]

    def default_dir(self) -> Path:
        return Path(self.spec.out_dir) if self.spec.out_dir else Path("runs") / "ablations" / self.name

    def run(self, run_id: str) -> RunSpec:
        for run in self.runs:
            if run.run_id == run_id:
                return run
        raise KeyError(f"grid {self.name!r} has no run {run_id!r}")


def format_value(value: Any) -> str:
    """A value as the right-hand side of a ``key=value`` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def level_label(value: Any) -> str:
    return format_value(value)


def _check_section(raw: dict, schema_cls, where: str):
    schema = OmegaConf.structured(schema_cls)
    OmegaConf.set_struct(schema, True)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, raw or {}))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        valid = [f.name for f in dataclasses.fields(schema_cls)]
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close and leaf not in valid else ""
        message = str(getattr(err, "msg", err)).splitlines()[0]
        raise GridError(f"grid key '{where}{key}': {message}{hint}; valid keys: {', '.join(valid)}") from None


def read_grid_file(path: Path) -> GridFile:
    try:
        raw = OmegaConf.load(path)
    except FileNotFoundError:
        raise GridError(f"grid file {path} does not exist") from None
    except Exception as err:  # yaml errors (a duplicate axis is a duplicate mapping key)
        text = str(err)
        if "duplicate key" in text:
            key = text.split("duplicate key")[-1].split()[0]
            raise GridError(f"{path}: duplicate key {key!r} (an axis or override may appear only once)") from None
        raise GridError(f"{path}: {text}") from None
    if not isinstance(raw, DictConfig):
        raise GridError(f"{path}: expected a mapping at the top level")
    raw = OmegaConf.to_container(raw, resolve=False)
    valid = [f.name for f in dataclasses.fields(GridFile)]
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GridError(f"{path}: unknown grid key {key!r}{hint}; valid keys: {', '.join(valid)}")
    sections = {name: _check_section(raw.pop(name, None), cls, f"{name}.")
                for name, cls in (("eval", EvalSpec), ("resources", Resources), ("checkpoints", CheckpointPolicy))}
    return GridFile(**raw, **sections)


def _overrides_mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, list):   # ["key=value", …] as on the command line
        out = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise GridError(f"{where}: expected key=value strings or a mapping, got {item!r}")
            key, _, text = item.partition("=")
            out[key.strip()] = OmegaConf.from_dotlist([f"x={text}"]).x
        return out
    if not isinstance(value, dict):
        raise GridError(f"{where}: expected a mapping of dotted config keys to values, got {value!r}")
    return dict(value)


def _parse_axes(raw: Any) -> list[Axis]:
    if not raw:
        return []
    if not isinstance(raw, dict):
        raise GridError("axes: expected a mapping of axis name → list of values or mapping of named levels")
    axes = []
    for name, values in raw.items():
        if isinstance(values, list):
            if not values:
                raise GridError(f"axis {name!r} has no values")
            labels = [level_label(v) for v in values]
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            if repeated:
                raise GridError(f"axis {name!r} lists {repeated} more than once")
            axes.append(Axis(name, {level_label(v): {name: v} for v in values}, key=name))
        elif isinstance(values, dict):
            if not values:
                raise GridError(f"axis {name!r} has no levels")
            levels = {str(label): _overrides_mapping(overrides, f"axis {name!r} level {label!r}")
                      for label, overrides in values.items()}
            axes.append(Axis(name, levels))
        else:
            raise GridError(f"axis {name!r}: expected a list of values (a config key's values) or a mapping "
                            f"level → overrides, got {values!r}")
    for first, second in itertools.combinations(axes, 2):
        shared = first.keys & second.keys
        if shared:
            raise GridError(f"duplicate axes: {first.name!r} and {second.name!r} both set {sorted(shared)}; "
                            "merge them into one axis (use include/exclude for the combinations)")
    return axes


def _matches(rule: dict[str, Any], combo: dict[str, str]) -> bool:
    for axis, wanted in rule.items():
        wanted = wanted if isinstance(wanted, list) else [wanted]
        if combo.get(axis) not in {level_label(w) for w in wanted}:
            return False
    return True


def _check_rule(rule: Any, axes: list[Axis], where: str) -> dict[str, Any]:
    names = [a.name for a in axes]
    if not isinstance(rule, dict) or not rule:
        raise GridError(f"{where}: expected a mapping axis → level, got {rule!r}")
    for axis in rule:
        if axis not in names:
            close = difflib.get_close_matches(str(axis), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GridError(f"{where} names axis {axis!r}{hint}, which is not an axis; axes: {', '.join(names)}")
    return rule


def _combinations(axes: list[Axis], include: list, exclude: list) -> tuple[list[dict], int]:
    by_name = {a.name: a for a in axes}
    product = [dict(zip(by_name, labels)) for labels in itertools.product(*(a.levels for a in axes))]
    total = len(product)
    excludes = [_check_rule(rule, axes, f"exclude[{i}]") for i, rule in enumerate(exclude or [])]
    kept = [c for c in product if not any(_matches(rule, c) for rule in excludes)]
    original = {a.name: list(a.levels) for a in axes}
    for i, rule in enumerate(include or []):
        rule = _check_rule(rule, axes, f"include[{i}]")
        fixed = {}
        for name, value in rule.items():
            axis, label = by_name[name], level_label(value)
            if label not in axis.levels:
                if axis.key is None:
                    raise GridError(f"include[{i}]: axis {name!r} has no level {label!r}; levels: "
                                    f"{', '.join(axis.levels)}")
                axis.levels[label] = {axis.key: value}   # a key axis takes extra values here
            fixed[name] = label
        free = [a for a in axes if a.name not in fixed]
        for labels in itertools.product(*(original[a.name] for a in free)):
            combo = {**fixed, **dict(zip((a.name for a in free), labels))}
            kept.append({a.name: combo[a.name] for a in axes})
    return kept, total


def config_hash(tree: DictConfig) -> str:
    """sha256 of the resolved config without the keys that change nothing (UNHASHED_KEYS)."""
    plain = OmegaConf.to_container(tree, resolve=True)
    for dotted in UNHASHED_KEYS:
        parent = plain
        parts = dotted.split(".")
        for part in parts[:-1]:
            parent = parent.get(part, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent.pop(parts[-1], None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _validate_axis_values(base: Path, common: list[str], axes: list[Axis]) -> None:
    """Each axis level alone on the base: an unknown key or a wrong-typed value names the axis."""
    for axis in axes:
        for label, overrides in axis.levels.items():
            try:
                load_experiment(base, common + [f"{k}={format_value(v)}" for k, v in overrides.items()])
            except ConfigError as err:
                raise GridError(f"axis {axis.name!r} level {label!r}: {err}") from None


def load_grid(path: str | Path, extra_overrides: list[str] | tuple[str, ...] = ()) -> Grid:
    """Read, expand and validate a grid file. ``extra_overrides`` (key=value) apply to every run."""
    path = Path(path)
    spec = read_grid_file(path)
    if not spec.base:
        raise GridError(f"{path}: 'base' (the experiment YAML every run starts from) is required")
    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise GridError(f"{path}: base experiment {base} does not exist")
    common_map = _overrides_mapping(spec.overrides, "overrides")
    common_map.update(_overrides_mapping(list(extra_overrides), "command-line overrides"))
    common = [f"{k}={format_value(v)}" for k, v in common_map.items()]
    try:
        load_experiment(base, common)
    except ConfigError as err:
        raise GridError(f"{path}: overrides: {err}") from None
    axes = _parse_axes(spec.axes)
    _validate_axis_values(base, common, axes)
    combos, total = _combinations(axes, spec.include, spec.exclude)
    if not combos:
        raise GridError(f"{path}: the grid has no runs: all {total} combinations of the axes "
                        f"({' × '.join(f'{a.name}[{len(a.levels)}]' for a in axes) or 'none'}) are excluded")
    _validate_eval(spec.eval)
    runs, seen, seen_combos = [], {}, set()
    for combo in combos:
        if tuple(combo.items()) in seen_combos:   # product and include reach it twice: one run
            continue
        seen_combos.add(tuple(combo.items()))
        axis_overrides = [f"{k}={format_value(v)}" for a in axes for k, v in a.levels[combo[a.name]].items()]
        overrides = common + axis_overrides
        try:
            experiment = load_experiment(base, overrides)
        except ConfigError as err:
            raise GridError(f"run {combo}: {err}") from None
        run_id = config_hash(experiment.tree)[:12]
        if run_id in seen:
            raise GridError(f"runs {seen[run_id]} and {combo} resolve to the same config (an axis level "
                            "changes nothing); remove one")
        seen[run_id] = combo
        runs.append(RunSpec(run_id, dict(combo), overrides, experiment.config.trainer.max_steps))
    seed_axis = spec.seed_axis
    if seed_axis is None and any(a.name == "seed" for a in axes):
        seed_axis = "seed"
    if seed_axis is not None and seed_axis not in [a.name for a in axes]:
        raise GridError(f"{path}: seed_axis {seed_axis!r} is not an axis")
    grid = Grid(spec.name, path, base, spec, axes, runs, seed_axis)
    if spec.baseline is not None:
        baseline_selector(grid, spec.baseline)   # validates
    return grid


def _validate_eval(spec: EvalSpec) -> None:
    from kgvlp.eval import SUITES, TASKS
    if spec.tasks is not None:
        unknown = [t for t in spec.tasks if t not in TASKS]
        if unknown:
            raise GridError(f"eval.tasks: unknown task(s) {unknown}; valid choices: {', '.join(TASKS)}")
    elif spec.suite not in SUITES:
        raise GridError(f"eval.suite: unknown suite {spec.suite!r}; valid choices: {', '.join(SUITES)}")
    if spec.synth is not None:
        from kgvlp.config.loader import check_synth_knobs
        try:
            check_synth_knobs(spec.synth, where="eval.synth")
        except ConfigError as err:
            raise GridError(str(err)) from None


def baseline_selector(grid: Grid, baseline: Any) -> dict[str, str]:
    """``{axis: level}`` (or ``"axis=level,…"``, or a bare level when one config axis)."""
    if isinstance(baseline, str):
        if "=" in baseline:
            baseline = dict(part.split("=", 1) for part in baseline.split(","))
        elif len(grid.config_axes) == 1:
            baseline = {grid.config_axes[0]: baseline}
        else:
            raise GridError(f"baseline {baseline!r}: name it as axis=level (config axes: {grid.config_axes})")
    if not isinstance(baseline, dict):
        raise GridError(f"baseline: expected a mapping axis → level, got {baseline!r}")
    out = {}
    for axis, level in baseline.items():
        match = [a for a in grid.axes if a.name == axis and a.name != grid.seed_axis]
        if not match:
            raise GridError(f"baseline names {axis!r}, which is not a configuration axis ({grid.config_axes})")
        label = level_label(level)
        if label not in match[0].levels:
            raise GridError(f"baseline: axis {axis!r} has no level {label!r}; levels: {', '.join(match[0].levels)}")
        out[axis] = label
    return out
