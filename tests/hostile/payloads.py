"""Files that would run code if unpickled or imported: each creates ``marker`` when it runs.
The tests assert that kgvlp refuses them by name and that ``marker`` never appears."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch


class CreatesFile:
    """Unpickled, calls ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def torch_zip(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.zeros(2), "payload": CreatesFile(marker)}, path)
    return path


def torch_legacy(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.zeros(2), "payload": CreatesFile(marker)}, path,
               _use_new_zipfile_serialization=False)
    return path


def joblib_file(path: Path, marker: Path) -> Path:
    import joblib
    joblib.dump(CreatesFile(marker), path)
    return path


def text_folder_copy(folder: Path) -> Path:
    """The bundled MiniLM's config and tokenizer (no weights) in ``folder``."""
    from kgvlp.models.text import default_text_model_path
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_text_model_path() / name, folder / name)
    return folder


def hf_with_pickled_weights(folder: Path, marker: Path) -> Path:
    text_folder_copy(folder)
    torch.save({"embeddings.word_embeddings.weight": CreatesFile(marker)}, folder / "pytorch_model.bin")
    return folder


def hf_with_custom_code(folder: Path, marker: Path) -> Path:
    """A transformers folder whose config maps AutoModel to its own module, which creates
    ``marker`` when imported (transformers would import it under trust_remote_code)."""
    from kgvlp.models.text import default_text_model_path
    text_folder_copy(folder)
    shutil.copy(default_text_model_path() / "model.safetensors", folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    return folder
