"""CLI behaviour that needs no toolchain: help, recipes, usage errors (click's runner)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edge_export.cli.main import cli

from .conftest import DIGITS, run_cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_help_documents_exit_codes_and_targets():
    result = invoke("--help")
    assert result.exit_code == 0
    for phrase in ("--target", "--model", "Exit codes", "130", "recipes", "verify"):
        assert phrase in result.output


def test_unknown_target_is_usage_error():
    result = invoke("--model", DIGITS, "--target", "windows")
    assert result.exit_code == 2
    assert "unknown target 'windows'" in result.output
    assert "Traceback" not in result.output


def test_missing_model_option_is_one_line():
    result = run_cli("--target", "android")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--model" in lines[0]


def test_json_error_object_on_usage_error():
    result = run_cli("--model", DIGITS, "--target", "android", "--recipe", "nope", "--json")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["error"]["code"] == 2
    assert "unknown recipe 'nope'" in data["error"]["message"]


def test_recipes_matrix_json_lists_every_target():
    result = invoke("recipes", "--json")
    assert result.exit_code == 0
    matrix = json.loads(result.output)
    assert set(matrix["fp32"]) == {"android", "ios", "tflite", "coreai"}
    assert all(cell["supported"] for cell in matrix["fp32"].values())


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "edge-export" in result.output


def test_failed_run_leaves_no_new_out_directory(tmp_path):
    out = tmp_path / "new-out"
    result = invoke("--model", str(tmp_path / "missing.py") + ":build", "--target", "tflite", "--out", str(out))
    assert result.exit_code == 2
    assert not out.exists()
