"""Issue 24: a package says exactly which gate it passed.

A threshold the gate skipped is not listed as applied (manifest ``parity.thresholds`` holds the
applied ones, ``parity.not_applied`` the others with why); a user recipe without a gate is
refused; a keep_float entry the target did not honour fails the job instead of vanishing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_export.quant.recipe import Thresholds, load_recipe_file
from edge_export.verify.parity import MIN_TOP1_SAMPLES, gate
from tests.conftest import DIGITS, ROOT, export_json, run_cli

GATE = Thresholds(cosine=0.99, snr_db=20.0, top1_agreement=0.9)


def logits(samples: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Class scores whose best two classes are 0.01 apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(samples):
        row = rng.uniform(0.0, 5.0, size=10).astype(np.float32)
        row[rng.permutation(10)[:2]] = (10.0, 9.99)
        rows.append([row[None]])
    return rows


def swapped_best_two(sample: list[np.ndarray]) -> list[np.ndarray]:
    row = sample[0].copy()
    first, second = np.argsort(row[0])[-1], np.argsort(row[0])[-2]
    row[0, [first, second]] = row[0, [second, first]]
    return [row]


def test_top1_over_few_samples_is_recorded_as_not_applied():
    reference = logits(8)
    actual = [swapped_best_two(s) for s in reference]  # top-1 agreement 0, cosine ~1
    result = gate(["logits"], reference, actual, GATE, "numpy", "pytorch", kinds=["class-logits"])
    record = result.to_json()
    assert result.outputs["logits"]["top1_agreement"] == 0.0  # measured and reported...
    assert result.status == "passed", result.reason  # ...not gated
    assert record["thresholds"] == {"cosine": 0.99, "snr_db": 20.0}
    assert record["not_applied"]["top1_agreement"]["value"] == 0.9
    assert f"8 samples < {MIN_TOP1_SAMPLES}" in record["not_applied"]["top1_agreement"]["why"]


def test_top1_over_enough_real_samples_is_applied_and_can_fail():
    reference = logits(MIN_TOP1_SAMPLES)
    actual = [swapped_best_two(s) for s in reference]
    result = gate(["logits"], reference, actual, Thresholds(cosine=0.99, top1_agreement=0.9), "numpy", "pytorch",
                  kinds=["class-logits"])
    assert result.thresholds == {"cosine": 0.99, "top1_agreement": 0.9} and result.not_applied == {}
    assert result.status == "failed" and "top1_agreement" in result.reason


def test_top1_without_a_class_output_is_not_applied():
    reference = logits(MIN_TOP1_SAMPLES)
    result = gate(["embedding"], reference, reference, GATE, "numpy", "pytorch", kinds=["tensor"])
    assert "top1_agreement" not in result.thresholds
    assert "no class output" in result.not_applied["top1_agreement"]["why"]


BASE = ('name = "mine"\ntarget = "tflite"\nsummary = "user recipe"\n[quantize]\nscheme = "aeq-weights"\n'
        'bits = 8\nactivations = "float"\ngranularity = "per-channel"\n')


@pytest.mark.parametrize(("tail", "said"), [("", "key 'parity' is missing"),
                                            ("[parity]\n", "key 'parity' is empty")])
def test_user_recipe_without_a_gate_is_refused(tmp_path, tail, said):
    path = tmp_path / "mine.toml"
    path.write_text(BASE + tail)
    proc = run_cli("--model", DIGITS, "--target", "tflite", "--recipe", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_an_unsupported_recipe_needs_no_gate_and_shipped_recipes_all_load(tmp_path):
    path = tmp_path / "no.toml"
    path.write_text('name = "no"\ntarget = "tflite"\nsummary = "s"\nunsupported = "no kernels"\n')
    assert load_recipe_file(path).unsupported == "no kernels"
    for recipe in sorted((ROOT / "recipes").glob("*/*.toml")):
        loaded = load_recipe_file(recipe)
        assert loaded.unsupported or loaded.parity.to_json(), recipe


@pytest.mark.slow
def test_manifest_of_a_random_input_build_lists_top1_as_not_applied(tmp_path):
    """digits tflite int8-weight without --validation-data (~15 s): the recipe's top-1
    threshold is reported, not gated, and the manifest says so; verify still passes."""
    from edge_export.release.bundle import check_integrity

    out = tmp_path / "dist"
    proc, data = export_json("--model", DIGITS, "--target", "tflite", "--recipe", "int8-weight",
                             "--out", str(out), "--no-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg = Path(data["packages"][0]["path"])
    manifest = check_integrity(pkg)  # schema and hashes
    assert manifest["parity"]["thresholds"] == {"cosine": 0.99, "snr_db": 20.0}
    assert manifest["parity"]["not_applied"]["top1_agreement"]["value"] == 0.9
    assert "random" in manifest["parity"]["not_applied"]["top1_agreement"]["why"]
    parity = json.loads((pkg / "parity.json").read_text())["parity"]
    assert parity["not_applied"] == manifest["parity"]["not_applied"]
    verified = run_cli("verify", str(pkg))
    assert verified.returncode == 0, verified.stderr
