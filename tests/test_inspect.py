"""``edge-export inspect``: the pre-flight report, through the real CLI."""

from __future__ import annotations

import json

import pytest

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow
HANDED_OVER = ROOT / "tests" / "handed_over.py"
BAD = ROOT / "tests" / "bad_models" / "models.py"


def inspect_json(model: str, *extra: str) -> dict:
    proc = run_cli("inspect", model, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_reports_the_compression_it_found_and_the_contract():
    report = inspect_json(f"{HANDED_OVER}:pruned", "--target", "tflite")
    # three Conv/Linear weights pruned by half: counted here from the builder's own numbers
    weights = 3 * 8 * 3 * 3 + 8 * 8 * 3 * 3 + 8 * 5
    assert report["parameters"] == weights + 8 + 8 + 5
    assert report["compression"]["pruned_parameters"] == 3
    assert 0.45 <= report["compression"]["sparsity"] <= 0.55
    assert report["inputs"] == [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32",
                                 "dynamic_dims": []}]
    assert report["outputs"][0]["shape"] == [1, 5]
    assert report["targets"]["tflite"]["status"] == "ok"
    assert report["ops"]["conv2d"] == 2


def test_names_keyword_inputs_and_output_kinds_of_a_transformers_model():
    report = inspect_json(f"{HANDED_OVER}:bert_encoder", "--target", "android")
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask"]
    assert [(o["name"], o["kind"]) for o in report["outputs"]] == [
        ("last_hidden_state", "tensor"), ("pooler_output", "tensor")]
    android = report["targets"]["android"]
    assert android["status"] in ("ok", "partly delegated") and android["not_converted"] == []


def test_pt2e_quantization_is_detected():
    report = inspect_json(f"{HANDED_OVER}:pt2e", "--target", "android")
    assert report["compression"]["quantization"] == "pt2e"
    assert any("quantize_per_tensor" in op for op in report["ops"])


def test_a_quantized_model_says_which_recipe_each_target_ships_it_as():
    """torchao 8da4w: android and tflite have 8da4w, ios computes it as int4 weights
    (the table in README's compressed-models section); a float model gets no such field."""
    report = inspect_json(f"{HANDED_OVER}:torchao_8da4w", "--target", "all")
    assert {t: f["ships_as"] for t, f in report["targets"].items()} == {
        "android": "8da4w", "ios": "int4-weight", "tflite": "8da4w", "coreai": "int4-weight"}
    report = inspect_json(f"{HANDED_OVER}:torchao_int8_weight", "--target", "all")
    assert report["targets"]["ios"]["ships_as"] == "int8-weight"
    assert report["targets"]["android"]["ships_as"].startswith("cannot carry it: target android")


def test_an_export_failure_is_reported_not_raised():
    report = inspect_json(f"{BAD}:data_dependent", "--target", "android")
    assert report["export"].startswith("torch.export failed") and report["targets"] == {}


def test_plain_output_is_a_readable_report():
    proc = run_cli("inspect", f"{HANDED_OVER}:nhwc_input", "--target", "tflite")
    assert proc.returncode == 0, proc.stderr
    assert "compression: none found" in proc.stdout and "tflite" in proc.stdout
    # off a terminal the header is one line, however long (rich wrapped it at 80 columns)
    header = proc.stdout.splitlines()[0]
    assert header.startswith("handed_over-nhwc_input (") and header.endswith("sparsity 0.0%"), header


def test_every_target_sees_the_model_as_exported_whatever_the_order():
    """README's example: BERT's non-persistent buffers (position_ids) are lifted constants, and
    android's pre-flight lowering used to pop them from the program the next target checked,
    so ios and tflite "failed" with KeyError on a model that exports on all three."""
    report = inspect_json(f"{HANDED_OVER}:bert_classifier", "--target", "all")
    targets = list(report["targets"])
    assert targets[0] == "android" and set(targets) == {"android", "ios", "tflite", "coreai"}  # android checked first
    for target in ("ios", "tflite", "coreai"):
        found = report["targets"][target]
        assert (found["status"], found["not_converted"], found.get("error")) == ("ok", [], None), target
    assert report["targets"]["android"]["status"] in ("ok", "partly delegated")
