"""Models as users hand them over (tests/handed_over.py), through the real CLI and runtimes:
odd strides, channels-last weights, pruning masks, fp16, PT2E and torchao quantization,
transformers models with keyword int64 inputs and ModelOutput outputs, nested outputs, and
package names that must not overwrite another model's package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import ROOT, export_json

pytestmark = pytest.mark.slow
MODELS = ROOT / "tests" / "handed_over.py"


def export(name: str, out: Path, *targets: str, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    args = ["--model", f"{MODELS}:{name}", "--out", str(out), "--no-cache", "--jobs", "2", *extra]
    for target in targets:
        args += ["--target", target]
    proc, data = export_json(*args)
    return proc.returncode, data


def manifest(pkg: dict) -> dict:
    return json.loads((Path(pkg["path"]) / "manifest.json").read_text())


def parity_file(pkg: dict) -> dict:
    return json.loads((Path(pkg["path"]) / "parity.json").read_text())["parity"]


def assert_all_passed(code: int, data: dict, targets: set[str]) -> list[dict]:
    assert code == 0, data
    assert {p["target"] for p in data["packages"] if p["status"] == "passed"} == targets
    return data["packages"]


@pytest.mark.parametrize("model", ["nhwc_input", "channels_last"])
def test_any_strides_export_correctly_everywhere(model, tmp_path):
    """ExecuTorch computed wrong outputs (cosine 0.22) on NHWC-strided example inputs and
    coremltools refused them: the artifact's contract is the manifest's contiguous layout."""
    packages = assert_all_passed(*export(model, tmp_path, "all"), {"android", "ios", "tflite", "coreai"})
    for pkg in packages:
        assert pkg["parity"]["outputs"]["output"]["cosine"] > 0.9999
        m = manifest(pkg)
        assert m["inputs"][0]["layout"] == "contiguous"
        assert m["source"]["compression"]["layout"] == (
            "channels_last" if model == "channels_last" else "contiguous")


def test_pruning_masks_are_folded_and_sparsity_recorded(tmp_path):
    packages = assert_all_passed(*export("pruned", tmp_path, "all"), {"android", "ios", "tflite", "coreai"})
    for pkg in packages:
        compression = manifest(pkg)["source"]["compression"]
        assert compression["pruned_parameters"] == 3
        # l1_unstructured(amount=0.5) on all three weight tensors: half their entries are zero
        assert 0.45 <= compression["sparsity"] <= 0.55
        assert pkg["parity"]["outputs"]["output"]["cosine"] > 0.9999


def test_an_fp16_model_is_upcast_and_says_so(tmp_path):
    packages = assert_all_passed(*export("half", tmp_path, "android", "tflite"), {"android", "tflite"})
    assert all(manifest(p)["source"]["compression"]["source_dtype"] == "float16" for p in packages)


def test_a_pt2e_quantized_model_keeps_its_quantization(tmp_path):
    """--target all builds the targets that can carry the PT2E graph and reports the other."""
    code, data = export("pt2e", tmp_path, "all")
    packages = assert_all_passed(code, data, {"android", "ios", "coreai"})
    (skipped,) = data["skipped"]
    assert skipped["target"] == "tflite" and skipped["installed"] is True
    assert skipped["refused"].startswith("target tflite cannot carry a pt2e model")
    assert {p["recipe"] for p in packages} == {"prequantized"}
    for pkg in packages:
        assert manifest(pkg)["source"]["compression"]["quantization"] == "pt2e"
    pte = next(p for p in packages if p["target"] == "android")
    params = 768 * 256 + 256 * 10  # the MLP's weights: int8 is about one byte each
    assert pte["bytes"] < 0.4 * 4 * params, "the .pte holds int8 weights, not fp32"


@pytest.mark.parametrize(("extra", "phrase"), [
    (("--target", "tflite"), "target tflite cannot carry a pt2e model"),
    (("--target", "android", "--recipe", "int8-dynamic"), "would quantize it again"),
])
def test_a_pt2e_model_is_refused_where_it_cannot_be_carried(extra, phrase, tmp_path):
    code, data = export("pt2e", tmp_path, extra=extra)
    assert code == 2 and phrase in data["error"]["message"]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(("model", "targets", "recipes"), [
    ("torchao_8da4w", ("all",), {"android": "8da4w", "ios": "int4-weight", "tflite": "8da4w",
                                      "coreai": "int4-weight"}),
    pytest.param("torchao_int8_weight", ("ios", "tflite"), {"ios": "int8-weight", "tflite": "int8-weight"},
                 marks=pytest.mark.extended),
    pytest.param("torchao_int8_dynamic", ("android", "tflite"), {"android": "int8-dynamic", "tflite": "int8-dynamic"},
                 marks=pytest.mark.extended),
])
def test_torchao_quantized_models_are_carried_onto_each_targets_scheme(model, targets, recipes, tmp_path):
    """torchao ``quantize_`` weights (tensor subclasses no exporter traces) ship as each target's
    recipe of the same scheme, gated against the user's own quantized module."""
    import numpy as np
    import torch

    from . import handed_over

    code, data = export(model, tmp_path, *targets)
    packages = assert_all_passed(code, data, set(recipes))
    user_model, (example,) = getattr(handed_over, model)()
    with torch.no_grad():
        user_out = user_model(example).numpy()
    for pkg in packages:
        assert pkg["recipe"] == recipes[pkg["target"]]
        m = manifest(pkg)
        scheme = model.removeprefix("torchao_").replace("_", "-")
        assert m["source"]["compression"]["quantization"] == f"torchao:{scheme}"
        # parity's reference is the user's torchao module, not a float copy of it
        golden = np.fromfile(Path(pkg["path"]) / m["golden"]["samples"][0]["outputs"]["output"], "<f4")
        np.testing.assert_allclose(golden.reshape(user_out.shape), user_out, rtol=0, atol=1e-6)
        assert pkg["bytes"] < 0.6 * 4 * (64 * 64 + 64 * 10) + 4096, "weights are stored quantized"


@pytest.mark.parametrize(("model", "target", "phrase"), [
    ("torchao_int8_weight", "android", "target android cannot carry a torchao:int8-weight model"),
    ("torchao_float8", "android", "tensor subclasses edge-export does not carry"),
])
def test_torchao_schemes_a_target_cannot_carry_are_refused(model, target, phrase, tmp_path):
    code, data = export(model, tmp_path, target)
    assert code == 2 and phrase in data["error"]["message"], data
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_transformers_classifier_as_it_comes(tmp_path):
    """Keyword int64 inputs with a padding mask, a SequenceClassifierOutput out."""
    packages = assert_all_passed(*export("bert_classifier", tmp_path, "android", "tflite"),
                                 {"android", "tflite"})
    for pkg in packages:
        m = manifest(pkg)
        assert [(i["name"], i["dtype"]) for i in m["inputs"]] == [("input_ids", "int64"),
                                                                  ("attention_mask", "int64")]
        assert [(o["name"], o["kind"], o["shape"]) for o in m["outputs"]] == [
            ("logits", "class-logits", [1, 3])]
        parity = parity_file(pkg)
        assert "not gated" in parity["top1_gate"] and "random" in parity["top1_gate"]
        assert parity["outputs"]["logits"]["cosine"] > 0.9999


def test_an_encoder_is_gated_on_cosine_not_top1(tmp_path):
    packages = assert_all_passed(*export("bert_encoder", tmp_path, "android"), {"android"})
    parity = parity_file(packages[0])
    assert list(parity["outputs"]) == ["last_hidden_state", "pooler_output"]
    for metrics in parity["outputs"].values():
        assert metrics["kind"] == "tensor" and "top1_agreement" not in metrics


def test_nested_outputs_are_flattened_and_named_by_key(tmp_path):
    packages = assert_all_passed(*export("nested_outputs", tmp_path, "all"), {"android", "ios", "tflite", "coreai"})
    for pkg in packages:
        assert [o["name"] for o in manifest(pkg)["outputs"]] == ["scores", "parts_0", "parts_1_0"]


def test_a_published_package_is_not_replaced_by_another_model(tmp_path):
    first = export("nhwc_input", tmp_path, "tflite", extra=("--name", "shared"))
    assert first[0] == 0
    before = (tmp_path / "shared-0.1.0" / "tflite-fp32" / "manifest.json").read_bytes()
    code, data = export("pruned", tmp_path, "tflite", extra=("--name", "shared"))
    assert code == 2 and "already holds a different model" in data["error"]["message"]
    assert (tmp_path / "shared-0.1.0" / "tflite-fp32" / "manifest.json").read_bytes() == before
    forced = export("pruned", tmp_path, "tflite", extra=("--name", "shared", "--force"))
    assert forced[0] == 0
    assert (tmp_path / "shared-0.1.0" / "tflite-fp32" / "manifest.json").read_bytes() != before


def test_default_names_include_the_attribute(tmp_path):
    for model in ("nhwc_input", "pruned"):
        assert export(model, tmp_path, "tflite")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handed_over-nhwc_input-0.1.0",
                                                          "handed_over-pruned-0.1.0"]
