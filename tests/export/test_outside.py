"""Acceptance: each export loads with its library's own API, in an interpreter that never
imports kgvlp, and gives kgvlp's outputs to 1e-5 (fp32)."""
from __future__ import annotations

import pytest

from tests.export.conftest import reference, run_outside


@pytest.mark.parametrize("fmt", ["open_clip", "hf", "timm"])
def test_vit_export_matches_kgvlp_outside_kgvlp(fmt, vit_run, vit_export, tmp_path):
    ref = reference(vit_run, tmp_path / "ref.safetensors")

    output = run_outside(fmt, vit_export, ref)

    assert output.strip().endswith("ok")


@pytest.mark.parametrize("fmt", ["open_clip", "hf", "timm"])
def test_resnet_export_matches_kgvlp_outside_kgvlp(fmt, resnet_run, resnet_export, tmp_path):
    ref = reference(resnet_run, tmp_path / "ref.safetensors")

    output = run_outside(fmt, resnet_export, ref)

    assert output.strip().endswith("ok")
