"""The pipeline end to end on real toolchains and runtimes (no mocks): both examples
to every target, parity checked on each artifact's own runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_export.package.hashing import artifact_sha256, file_sha256
from edge_export.package.manifest import read_golden_tensor, validate_manifest
from tests.conftest import DIGITS, run_cli

pytestmark = pytest.mark.slow

EXPECTED_RUNTIME = {"android": "executorch", "tflite": "litert", "coreai": "coreai"}
ARTIFACT = {"android": "model.pte", "ios": "model.mlpackage", "tflite": "model.tflite",
            "coreai": "model.aimodel"}


@pytest.fixture(params=["digits_all", "transformer_all"])
def run(request):
    return request.getfixturevalue(request.param)


def test_every_target_passes_parity(run):
    proc, data, _ = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["ok"] is True
    assert [p["target"] for p in data["packages"]] == ["android", "ios", "tflite", "coreai"]
    for pkg in data["packages"]:
        parity = pkg["parity"]
        if pkg["target"] == "ios":
            # Linux has no Core ML runtime: our MIL reference executor runs it, and says so.
            assert parity["runtime"] in ("mil-reference", "coreml")
        else:
            assert parity["runtime"] == EXPECTED_RUNTIME[pkg["target"]]
        assert parity["status"] == "passed", parity["reason"]
        for metrics in parity["outputs"].values():
            assert metrics["cosine"] >= 0.9999
            assert metrics["snr_db"] >= 60
            assert set(metrics) == {"max_abs", "mean_abs", "cosine", "snr_db", "top1_agreement"}


def test_json_shape_and_hashes(digits_all):
    _, data, out = digits_all
    assert set(data) == {"ok", "packages"}
    for pkg in data["packages"]:
        assert {"target", "recipe", "path", "artifact", "sha256", "bytes", "parity"} <= set(pkg)
        assert {"status", "runtime", "reason", "outputs"} <= set(pkg["parity"])
        artifact = Path(pkg["artifact"])
        assert artifact.name == ARTIFACT[pkg["target"]]
        assert artifact.exists()
        assert artifact_sha256(artifact) == (pkg["sha256"], pkg["bytes"])
        assert Path(pkg["path"]) == out / "digits-0.1.0" / f"{pkg['target']}-fp32"
        latency = pkg["latency"]
        assert 0 < latency["min_ms"] <= latency["median_ms"] <= latency["p90_ms"]
        assert latency["threads"] == 1 and latency["runs"] == 20 and latency["warmup"] > 0
        assert latency["busy"] == (latency["load_avg_1m"] > latency["cpu_count"])


def test_latency_command_compares_every_package_with_eager_at_the_given_threads(digits_all):
    _, data, _ = digits_all
    proc = run_cli("latency", *(p["path"] for p in data["packages"]), "--model", DIGITS,
                   "--threads", "2", "--runs", "3", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["threads"] == 2 and result["statistic"] == "min_ms"
    assert [r["label"] for r in result["results"]] == [
        "android/fp32", "ios/fp32", "tflite/fp32", "coreai/fp32", "pytorch-eager"]
    for row in result["results"]:
        assert row["runs"] == 3 and 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["vs_eager"] == pytest.approx(row["min_ms"] / result["results"][-1]["min_ms"],
                                                rel=1e-3)
    assert result["fastest"] in ("android/fp32", "tflite/fp32")  # the MIL reference is left out


def test_manifest_is_schema_valid_and_complete(digits_all):
    _, data, _ = digits_all
    for pkg in data["packages"]:
        root = Path(pkg["path"])
        manifest = json.loads((root / "manifest.json").read_text())
        validate_manifest(manifest)
        assert manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 1, 8, 8],
                                       "dynamic_dims": [], "layout": "contiguous"}]
        assert manifest["outputs"][0]["name"] == "logits"
        assert manifest["outputs"][0]["kind"] == "class-logits"  # the model has labels
        assert manifest["labels"] == {"file": "labels.txt", "count": 10}
        assert (root / "labels.txt").read_text().split() == [str(d) for d in range(10)]
        assert manifest["preprocessing"]["image_size"] == [8, 8]
        assert manifest["golden"]["inputs_from"] == "validation-data"
        for entry in manifest["files"]:
            assert file_sha256(root / entry["path"]) == entry["sha256"]
        assert "conversion_date" not in json.dumps(manifest)
        parity = json.loads((root / "parity.json").read_text())
        assert parity["parity"]["status"] == manifest["parity"]["status"] == "passed"
        assert "latency" not in parity  # measured per run, kept out of reproducible packages


def test_golden_files_reproduce_pytorch(digits_all):
    """Golden outputs are PyTorch's, computed here independently of the pipeline."""
    import torch

    from .examples_loader import load_digits_model

    model = load_digits_model()
    _, data, _ = digits_all
    root = Path(data["packages"][0]["path"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["golden"]["samples"]) == 9  # example input + 8 validation samples
    for sample in manifest["golden"]["samples"]:
        x = read_golden_tensor(root, sample["inputs"]["x"], "float32", [1, 1, 8, 8])
        y = read_golden_tensor(root, sample["outputs"]["logits"], "float32", [1, 10])
        with torch.no_grad():
            expected = model(torch.from_numpy(x.copy())).numpy()
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_published_tree_has_no_temporaries(digits_all):
    _, _, out = digits_all
    assert sorted(p.name for p in out.iterdir()) == ["digits-0.1.0"]
