"""No file read from disk is ever unpickled or executed: every module of kgvlp/ and
knowledge/ is scanned (its syntax tree, so comments and docstrings do not count) for
pickle-family imports, ``torch.load`` without ``weights_only=True``, ``yaml.load``
without a safe loader, ``numpy.load(allow_pickle=True)``, ``read_pickle``,
``trust_remote_code=True`` and ``eval``/``exec``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kgvlp", "knowledge")
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_YAML_CALLS = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, name: str = "<source>") -> list[str]:
    """``file:line: what`` for each way ``source`` could unpickle or run what it reads."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in UNPICKLING_MODULES:
                    found.append(f"{where}: imports {module}")
        if not isinstance(node, ast.Call):
            continue
        callee = _dotted(node.func)
        leaf = callee.rsplit(".", 1)[-1]
        if callee in ("eval", "exec"):
            found.append(f"{where}: {callee}()")
        elif callee.endswith("torch.load") and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        elif callee.startswith("yaml.") and leaf in UNSAFE_YAML_CALLS:
            found.append(f"{where}: {callee}")
        elif callee.startswith("yaml.") and leaf in ("load", "load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: {callee} without a safe loader")
        elif leaf == "load" and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: {callee}(allow_pickle=True)")
        elif leaf == "read_pickle":
            found.append(f"{where}: {callee}")
        if _is_true(_keyword(node, "trust_remote_code")):
            found.append(f"{where}: {callee}(trust_remote_code=True)")
    return found


def test_no_module_of_kgvlp_or_knowledge_unpickles_or_runs_what_it_reads():
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]

    found = [hit for path in files for hit in unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))]

    assert len(files) > 50 and found == []


@pytest.mark.parametrize("line", [
    "import pickle", "from joblib import load", "import dill as d", "x = torch.load(path)",
    "x = torch.load(path, weights_only=False)", "x = yaml.load(text)", "x = yaml.load(text, Loader=yaml.Loader)",
    "x = yaml.unsafe_load(text)", "x = np.load(path, allow_pickle=True)", "x = pd.read_pickle(path)",
    "m = AutoModel.from_pretrained(p, trust_remote_code=True)", "eval(text)",
])
def test_the_scan_finds_each_unsafe_load(line):
    assert len(unsafe_loads(line)) == 1


@pytest.mark.parametrize("line", [
    "x = torch.load(path, weights_only=True)", "x = yaml.load(text, Loader=yaml.SafeLoader)",
    "x = yaml.safe_load(text)", "x = np.load(path, mmap_mode='r')", "model.eval()", "ast.literal_eval(cell)",
    "m = AutoModel.from_pretrained(p, trust_remote_code=False)",
])
def test_the_scan_passes_safe_loads(line):
    assert unsafe_loads(line) == []
