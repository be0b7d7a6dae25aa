"""Export a trained run as folders that open_clip, transformers and timm load on their own,
and read such folders back (``kgvlp.load``, ``model.init_from=DIR``). See docs/export.md."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kgvlp.export import names
from kgvlp.export.formats import FORMATS, ExportError, impossible_formats

MANIFEST = "kgvlp_export.json"

__all__ = ["FORMATS", "ExportError", "MANIFEST", "export", "load", "load_weights_into", "is_export"]


def kgvlp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kgvlp")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The commit of the kgvlp checkout that writes the export ('unknown' outside git)."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def is_export(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _requested(formats) -> list[str]:
    requested = list(FORMATS) if formats in (None, "all") or "all" in formats else list(formats)
    unknown = sorted(set(requested) - set(FORMATS))
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; valid: {', '.join(FORMATS)}, all")
    return requested


def export(run: str | Path, out: str | Path, formats=("all",), overwrite: bool = False) -> Path:
    """Write ``run`` (a run folder or checkpoint in one) to ``out`` in ``formats``.

    A format the model cannot be written in fails before anything is written, naming the
    formats that are possible; with "all", such formats are skipped and the card says why.
    """
    from kgvlp.engine.checkpoint import find_weights, load_model
    from kgvlp.export import card, formats as fmt
    from kgvlp.models.text import load_tokenizer
    out = Path(out)
    requested = _requested(formats)
    model, experiment = load_model(run)
    image_cfg = experiment.config.model.image
    impossible = impossible_formats(model, image_cfg)
    explicit = not (formats in (None, "all") or "all" in formats)
    blocked = [f for f in requested if f in impossible]
    if blocked and explicit:
        possible = [f for f in FORMATS if f not in impossible]
        raise ExportError("; ".join(f"cannot export to {f}: {impossible[f]}" for f in blocked) +
                          f". Possible formats for this run: {', '.join(possible) or 'none'}")
    chosen = [f for f in requested if f not in impossible]
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = load_tokenizer(experiment.config.model.text)
    maps: dict[str, list] = {}
    extra = {}
    if "timm" in chosen:
        maps["timm"] = fmt.write_timm(model, image_cfg, out / "timm")
    if "hf" in chosen:
        maps.update(fmt.write_hf(model, image_cfg, tokenizer, out / "hf"))
    if "open_clip" in chosen:
        result = fmt.write_open_clip(model, image_cfg, tokenizer, out / "open_clip", experiment)
        maps["open_clip"], extra["open_clip_embed_dim"] = result["open_clip"], result["embed_dim"]
        maps.setdefault("heads", names.heads_map(list(model.state_dict())))
    weights = find_weights(run)
    run_dir = weights.parent.parent if weights.parent.name == "final" else weights.parent
    shutil.copyfile(run_dir / "config.yaml", out / "config.yaml")
    training_only = sorted(k for k in model.state_dict() if not k.startswith(names.EXPORTED_PREFIXES))
    manifest = {
        "kgvlp_version": kgvlp_version(), "commit": git_commit(),
        "name_map_version": names.NAME_MAP_VERSION, "formats": chosen,
        "skipped_formats": {f: impossible[f] for f in requested if f in impossible},
        "source": str(weights.resolve()), "training_only_keys": training_only, **extra,
        "name_maps": {k: names.serialise(v) for k, v in maps.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    card.write_card(out, experiment, run_dir, manifest)
    return out


def _read_manifest(folder: Path) -> dict:
    if not (folder / MANIFEST).is_file():
        raise ExportError(f"{folder}: not a kgvlp export folder (no {MANIFEST}); "
                          "a run folder loads with kgvlp.engine.checkpoint.load_model")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{folder / MANIFEST}: not the JSON manifest kgvlp export writes ({err})") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{folder / MANIFEST}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def _build_model(folder: Path):
    """A VLPModel shaped like the exported one (weights not loaded yet)."""
    from kgvlp.config import load_experiment
    from kgvlp.export.formats import text_folder
    from kgvlp.models.build import build_model
    overrides = [f"model.text.path={text_folder(folder)}", "model.text.pretrained=false",
                 "model.image.weights=null", "model.init_from=null"]
    experiment = load_experiment(folder / "config.yaml", overrides)
    return build_model(experiment.config), experiment


def _current_maps(model, image_cfg, recorded: dict) -> dict[str, list[names.Entry]]:
    from kgvlp.export.formats import stem_key
    keys = list(model.state_dict())
    builders = {"timm": lambda: names.timm_map(keys), "hf_text": lambda: names.hf_text_map(keys),
                "hf_image": lambda: names.hf_vit_map(keys), "heads": lambda: names.heads_map(keys),
                "open_clip": lambda: names.open_clip_map(keys, stem_key(image_cfg))}
    return {name: builders[name]() for name in recorded}


def _exported_state(folder: Path, model, image_cfg, manifest: dict) -> dict:
    """The encoder and head tensors of an export folder, checked against this kgvlp's maps."""
    from kgvlp.export import formats as fmt
    recorded = manifest.get("name_maps", {})
    current = _current_maps(model, image_cfg, recorded)
    differences = [f"[{name}] {line}" for name in recorded
                   for line in names.diff_maps(recorded[name], current[name])]
    if differences:
        raise ExportError(
            f"{folder} was written by kgvlp {manifest.get('kgvlp_version')} with name map "
            f"v{manifest.get('name_map_version')}; this kgvlp ({kgvlp_version()}, name map "
            f"v{names.NAME_MAP_VERSION}) maps these keys differently:\n  " + "\n  ".join(differences[:40]))
    state = {**fmt.read_image(folder, current, image_cfg), **fmt.read_text(folder, current),
             **fmt.read_heads(folder, current)}
    return state


def load_weights_into(model, folder: str | Path) -> list[str]:
    """Load an export's encoders and heads into ``model`` (``model.init_from=DIR``).

    Every exported tensor must find its key and every encoder/head key of ``model`` must be
    in the export; the model's other keys (objective heads, services) keep their values and
    are returned, so a caller can report them.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    state = _exported_state(folder, model, model.model_cfg.image, manifest)
    own = model.state_dict()
    mismatched = [f"{k}: export {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ExportError(f"{folder} holds another architecture: {mismatched[:8]}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_exported = [k for k in missing if k.startswith(names.EXPORTED_PREFIXES)]
    if missing_exported or unexpected:
        raise names.NameMapError(f"{folder} does not fit this model: missing {missing_exported[:12]}, "
                                 f"unexpected {list(unexpected)[:12]}")
    return sorted(missing)


def load(path: str | Path):
    """A VLPModel (eval mode) from an export folder in any of its formats, or a run folder.

    Training-only state (objective heads, EMA copies, banks) is not exported; it keeps its
    fresh initialisation and ``model.not_exported`` lists those keys.
    """
    path = Path(path)
    if not is_export(path):
        from kgvlp.engine.checkpoint import load_model
        return load_model(path)[0]
    _read_manifest(path)            # a missing or corrupt manifest fails first, naming the file
    model, _ = _build_model(path)
    model.not_exported = load_weights_into(model, path)
    return model.eval()
