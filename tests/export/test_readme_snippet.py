"""The README's three loading snippets (docs/export_readme_snippet.md) run as written on a
real export, each in a fresh interpreter that does not import kgvlp."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SNIPPETS = Path(__file__).parents[2] / "docs" / "export_readme_snippet.md"
BLOCKS = re.findall(r"```python\n(.*?)```", SNIPPETS.read_text(), flags=re.S)


def test_the_snippet_file_has_the_three_loading_blocks():
    assert [("open_clip" in b, "transformers" in b, "timm" in b) for b in BLOCKS] == [
        (True, False, False), (False, True, False), (False, False, True)]


@pytest.mark.parametrize("encoder", ["vit", "resnet"])   # the demo trains a ResNet-18
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=["open_clip", "transformers", "timm"])
def test_readme_snippet_runs_on_an_export(index, encoder, request):
    folder = request.getfixturevalue(f"{encoder}_export")
    code = BLOCKS[index].replace('DIR = "exports/demo"', f"DIR = {str(folder)!r}")
    code += "\nimport sys\nassert 'kgvlp' not in sys.modules\n"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
