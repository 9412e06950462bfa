"""Issue 24: a package says exactly which gate it passed.

A threshold the gate skipped is not listed as applied (manifest ``parity.thresholds`` holds the
applied ones, ``parity.not_applied`` the others with why); a user recipe without a gate is
refused; a keep_float entry the target did not honour fails the job instead of vanishing.
"""

from __future__ import annotations

import json
import re
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
                             "--out", str(out), "--no-cache", "--report", str(tmp_path / "report.html"))
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
    row = re.search(r"<td>top1_agreement</td><td>[^<]*</td><td>([^<]*)</td><td class='([^']*)'>",
                    (tmp_path / "report.html").read_text())
    assert row is not None and row.group(1).startswith("0.9: reported, not gated") and row.group(2) == ""


# --- keep_float: refused or honoured, never dropped ------------------------------------------

def _digits_program():
    import torch

    from tests.examples_loader import load_example

    model, example = load_example("digits").build()
    return torch.export.export(model.eval(), example), example


def _ctx(example):
    from edge_export.build.exporter import BuildContext

    return BuildContext(calibration=[example], reload_module=lambda: None, example_inputs=example,
                        input_names=["x"], output_names=["logits"])


def _recipe(target: str, name: str, keep: list[str]):
    from edge_export.quant.mechanisms import with_keep_float
    from edge_export.quant.recipe import builtin_recipes

    return with_keep_float(builtin_recipes(target)[name], keep)


def test_keep_float_entries_resolve_to_layers_or_are_refused():
    from edge_export.errors import UsageError
    from edge_export.quant.mechanisms import kept_layers

    graph = _digits_program()[0].module()
    assert kept_layers(["features", "@last"], graph) == {"features": ["features.0", "features.2"],
                                                        "@last": ["classifier.3"]}
    assert kept_layers(["classifier.*"], graph) == {"classifier.*": ["classifier.1", "classifier.3"]}
    with pytest.raises(UsageError, match="'classifer.3' matches no conv or linear layer"):
        kept_layers(["classifer.3"], graph)
    with pytest.raises(UsageError, match="'features.1' matches no conv or linear layer"):
        kept_layers(["features.1"], graph)  # a ReLU: no recipe quantizes it, keeping it keeps nothing


@pytest.mark.slow
def test_tflite_check_reads_the_quantized_flatbuffer():
    """AEQ on the converted digits model (~10 s): the check passes when the kept layer's ops
    are float in the artifact, and fails naming the entry when they are not (the flatbuffer
    of a run that did not keep it stands for a scope mapping that missed the layer)."""
    import litert_torch
    from edge_export.exporters.litert.schemes import _kept_float_check, aeq_weights

    from edge_export.errors import UsageError

    program, example = _digits_program()
    flat = bytes(litert_torch.convert(program.module(), example).model_content())
    kept = aeq_weights(program, _recipe("tflite", "int8-weight", ["classifier.3"]), _ctx(example))
    assert kept.post_convert(flat)  # honoured: the check lets it through
    everything = aeq_weights(program, _recipe("tflite", "int8-weight", []), _ctx(example)).post_convert(flat)
    with pytest.raises(UsageError, match="'classifier.3' was not honoured on tflite: classifier.3 stayed quantized"):
        _kept_float_check(["classifier.3"], program.module())(everything)


@pytest.mark.slow
def test_pt2e_and_torchao_checks_read_the_quantized_model():
    """android int8-dynamic (PT2E, no lowering) and 8da4w (torchao on the eager module)."""
    from edge_export.exporters.executorch.schemes import pt2e_xnnpack

    from edge_export.quant.mechanisms import eager_float, pt2e_float_layers
    from tests.examples_loader import load_example

    program, example = _digits_program()
    kept = pt2e_xnnpack(program, _recipe("android", "int8-dynamic", ["classifier.3"]), _ctx(example))
    # XNNPACK's dynamic quantizer takes Linear layers only: the convs are float either way
    assert pt2e_float_layers(kept.program) == {"features.0", "features.2", "classifier.3"}
    plain = pt2e_xnnpack(program, _recipe("android", "int8-dynamic", []), _ctx(example))
    assert pt2e_float_layers(plain.program) == {"features.0", "features.2"}

    import torch
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    module = load_example("digits").build()[0]
    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32)),
              filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "classifier.3")
    assert [eager_float(module, p) for p in ("classifier.1", "classifier.3", "features.0")] == [False, True, True]


@pytest.mark.slow
def test_coreml_check_reads_the_compressed_program():
    """ios int8-weight on digits (~10 s): the compressed ML Program's constants say which layers
    kept float weights."""
    from edge_export.exporters.coreml.schemes import _float_weight_layers, coremltools, linear_weights

    program, example = _digits_program()
    ct = coremltools()
    mlmodel = ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS17)
    prepared = linear_weights(program, _recipe("ios", "int8-weight", ["classifier.3"]), _ctx(example))
    is_float = _float_weight_layers(prepared.post_convert(mlmodel))
    assert [is_float(p) for p in ("features.0", "classifier.1", "classifier.3")] == [False, False, True]


def test_cli_refuses_a_keep_float_entry_that_matches_nothing(tmp_path):
    text = (ROOT / "recipes" / "tflite" / "int8-weight.toml").read_text()
    text = text.replace('name = "int8-weight"', 'name = "kf"').replace(
        "[quantize]\n", '[quantize]\nkeep_float = ["classifier.9"]\n', 1)
    path = tmp_path / "kf.toml"
    path.write_text(text)
    out = tmp_path / "dist"
    proc, data = export_json("--model", DIGITS, "--target", "tflite", "--recipe", str(path), "--out", str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = data["error"]["message"]
    assert "keep_float entry 'classifier.9' matches no conv or linear layer" in message and "\n" not in message
    assert "Traceback" not in proc.stderr and not (out / "digits-0.1.0").exists()
