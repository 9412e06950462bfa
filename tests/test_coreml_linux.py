"""Core ML parity on Linux through the pipeline: the MIL reference executor runs the
.mlpackage, reports itself as the runtime, and catches fp16 overflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLES, TRANSFORMER, export_json

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "darwin", reason="macOS parity uses real Core ML")]
OVERFLOW = f"{EXAMPLES / 'overflow.py'}:build"
COREML_RECIPES = ("fp32", "fp16", "int8-weight", "int4-weight", "palettize4")


def test_transformer_passes_every_coreml_recipe_on_mil_reference(tmp_path):
    args = ["--model", TRANSFORMER, "--target", "ios", "--out", str(tmp_path)]
    for name in COREML_RECIPES:
        args += ["--recipe", name]
    proc, data = export_json(*args, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p["recipe"] for p in data["packages"]] == list(COREML_RECIPES)
    for pkg in data["packages"]:
        assert pkg["parity"]["status"] == "passed", (pkg["recipe"], pkg["parity"]["reason"])
        assert pkg["parity"]["runtime"] == "mil-reference"
        manifest = json.loads((Path(pkg["path"]) / "manifest.json").read_text())
        assert manifest["parity"]["runtime"] == "mil-reference"


def test_fp16_overflow_is_caught_and_fp32_passes(tmp_path):
    proc, data = export_json("--model", OVERFLOW, "--target", "ios", "--recipe", "fp32", "--recipe", "fp16",
                             "--out", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    by_recipe = {p["recipe"]: p for p in data["packages"]}
    assert by_recipe["fp32"]["status"] == "passed"
    assert by_recipe["fp16"]["status"] == "failed"
    assert "scores" in by_recipe["fp16"]["parity"]["reason"]
    # A failed gate publishes nothing; the package is kept for inspection under .failed/.
    assert not (tmp_path / "overflow-0.1.0" / "ios-fp16").exists()
    assert (tmp_path / ".failed" / "overflow-0.1.0" / "ios-fp16" / "manifest.json").exists()
    assert (tmp_path / "overflow-0.1.0" / "ios-fp32" / "manifest.json").exists()
