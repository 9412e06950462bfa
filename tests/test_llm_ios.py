"""edge-export llm --target ios: a Core ML stateful multifunction ML Program (prefill/decode
over fp16 K/V states), verified by generation on the MIL reference executor, then run again
with `generate`. Expected tokens come from transformers' own ``generate``; the int4/int8
weight grids from coremltools' own quantizer, never from edge-export's code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_llm import QWEN2, TINY_LM, _hf_greedy, _manifest

CONTEXT = 64


def _export(tmp_path_factory, model: str, name: str, *recipes: str) -> Path:
    out = tmp_path_factory.mktemp(name)
    args = [a for r in recipes for a in ("--recipe", r)]
    proc = run_cli("llm", "--model", model, "--target", "ios", *args, "--max-context", str(CONTEXT),
                   "--name", name, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / f"{name}-0.1.0"


@pytest.fixture(scope="module")
def tiny_packages(tmp_path_factory) -> Path:
    """fp32 and 4bit in one CLI run: the suite pays the imports and the model load once."""
    return _export(tmp_path_factory, str(TINY_LM), "tinyios", "fp32", "4bit")


@pytest.fixture(scope="module")
def tiny_fp32(tiny_packages: Path) -> Path:
    return tiny_packages / "ios-fp32"


def _tiny_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()


def _check_package(pkg: Path) -> dict:
    manifest = _manifest(pkg)
    assert manifest["parity"]["status"] == "passed" and manifest["parity"]["runtime"] == "mil-reference"
    assert manifest["recipe"]["activations"] == "float32"  # [targets.ios]: weight-only on Core ML
    names = {f["path"] for f in manifest["files"]}
    assert {"tokenizer.json", "generation_config.json", "parity.json"} <= names
    assert any(n.startswith("model.mlpackage/") for n in names)
    return manifest


def _functions(pkg: Path) -> dict:
    """The package's functions and states, read back with coremltools' own loader."""
    from edge_export.exporters.coreml import mil

    return {name: mil.load(pkg / "model.mlpackage", function=name) for name in ("prefill", "decode")}


@pytest.mark.slow
def test_tiny_lm_ios_fp32_generates_like_transformers(tiny_fp32: Path) -> None:
    manifest = _check_package(tiny_fp32)
    assert manifest["parity"]["metrics"]["greedy_worst_logits_cosine"] >= 0.9999
    model = _tiny_model()
    for golden in manifest["golden"]:
        data = json.loads((tiny_fp32 / golden["path"]).read_text())
        assert data["continuation_ids"] == _hf_greedy(model, data["prompt_ids"], 32)
    functions = _functions(tiny_fp32)
    for program in functions.values():
        assert {"read_state", "slice_update", "coreml_update_state"} <= program.op_types
        assert {s.dtype for s in program.state_specs.values()} == {np.dtype(np.float16)}
        assert len(program.state_specs) == 2 * model.config.num_hidden_layers
    assert functions["prefill"].input_shapes["input_ids"] == (1, CONTEXT - 1)
    assert functions["decode"].input_shapes["input_ids"] == (1, 1)
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((tiny_fp32 / "model.mlpackage/Data/com.apple.CoreML/model.mlmodel").read_bytes())
    assert spec.description.defaultFunctionName == "decode"
    from edge_export.llm.coreml import function_shapes  # what the macOS session reads

    assert function_shapes(spec, "prefill") == ((1, CONTEXT - 1), (1, 2, CONTEXT, 32))
    assert function_shapes(spec, "decode") == ((1, 1), (1, 2, CONTEXT, 32))
    assert dict(spec.description.metadata.userDefined) == {
        "edge_export.max_context": str(CONTEXT), "edge_export.prefill_tokens": str(CONTEXT - 1),
        "edge_export.vocab_size": "1024"}
    # one copy of the weights for both functions: the package is not twice the float weights
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert manifest["artifact"]["bytes"] < 1.2 * weights


def _expected_text(golden: dict, n: int) -> str:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TINY_LM / "tokenizer.json")).decode(golden["continuation_ids"][:n])


@pytest.mark.slow
def test_generate_on_the_ios_package(tiny_fp32: Path) -> None:
    """``generate`` in-process (the CLI path is the extended test below and test_llm's)."""
    import io

    from edge_export.llm.generate import generate

    golden = json.loads((tiny_fp32 / "golden" / "prompt_001.json").read_text())
    out, err = io.StringIO(), io.StringIO()
    stats = generate(tiny_fp32, golden["prompt"], 12, out=out, err=err)
    assert out.getvalue() == golden["prompt"] + _expected_text(golden, 12) + "\n"
    assert stats["ids"] == golden["continuation_ids"][:12]
    assert "decode 11 tokens at" in err.getvalue() and "(mil-reference)" in err.getvalue()


@pytest.mark.slow
@pytest.mark.extended
def test_generate_cli_on_the_ios_package(tiny_fp32: Path) -> None:
    golden = json.loads((tiny_fp32 / "golden" / "prompt_002.json").read_text())
    proc = run_cli("generate", str(tiny_fp32), "--prompt", golden["prompt"], "--max-new-tokens", "20")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == golden["prompt"] + _expected_text(golden, 20) + "\n"
    assert "decode 19 tokens at" in proc.stderr and "(mil-reference)" in proc.stderr


@pytest.mark.slow
def test_ios_demo_reads_the_golden_files_this_package_has(tiny_fp32: Path) -> None:
    pytest.importorskip("tree_sitter_swift")
    from tests.test_app_sources import SWIFT_LLM_GOLDEN_READERS, SWIFT_SRC, swift_json_keys

    keys = set().union(*(swift_json_keys(SWIFT_SRC / f) for f in SWIFT_LLM_GOLDEN_READERS))
    golden = json.loads((tiny_fp32 / "golden" / "prompt_000.json").read_text())
    assert {"prompt", "prompt_ids", "continuation_ids"} <= keys <= set(golden)


@pytest.mark.slow
def test_session_state_holds_the_cache(tiny_fp32: Path) -> None:
    """After a 5-token prefill and one decode, exactly positions 0..5 of the cache hold the keys
    the model computed (the padded rest of the prefill chunk is overwritten or masked later)."""
    import torch

    from edge_export.llm.backend import get_backend

    session = get_backend("ios").open_session(tiny_fp32 / "model.mlpackage")
    ids = np.array([1, 200, 300, 400, 500, 600])
    session.forward(ids[:5], 0)
    logits = session.forward(ids[5:], 5)
    model = _tiny_model()
    with torch.no_grad():
        out = model(torch.from_numpy(ids)[None], use_cache=True)
    np.testing.assert_allclose(logits[-1], out.logits[0, -1].numpy(), atol=5e-3)
    want = out.past_key_values.layers[0].keys[0].numpy()  # [kv_heads, 6, head_dim], after RoPE
    got = session.state["k_cache_0"][0, :, :6].astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (8, 0)])
def test_pytorch_reference_quantizes_like_coremltools(bits: int, group: int) -> None:
    """The same-quantization reference must hold exactly the weights Core ML dequantizes."""
    import torch
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights

    from edge_export.llm.coreml.quantize import dequantize, quantize_weight

    weight = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    weight[0, :32] = torch.linspace(-3.5, 3.5, 32) / 7 * 0.5  # values on the rounding boundary
    params = linear_quantize_weights.blockwise_compress(weight.numpy(), nbits=bits, mode="LINEAR_SYMMETRIC",
                                                        signed=True, block_sizes=[1, group])
    want = linear_quantize_weights.decompress(params)
    got = dequantize(*quantize_weight(weight, bits, group)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert len(np.unique(got[0, :32])) <= 2 ** bits - 1


def test_weights_enter_the_conversion_quantized(tmp_path: Path) -> None:
    """The quantized model converts straight to ``constexpr_blockwise_shift_scale`` (no fp32
    weight constant) holding the int4 codes and scales coremltools' own quantizer computes,
    and the executor's lazy dequantization equals coremltools' ``decompress``."""
    import coremltools as ct
    import torch
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_blockwise_shift_scale
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights
    from edge_export.exporters.coreml import mil
    from edge_export.exporters.coreml.mil.quantization import Blockwise

    from edge_export.llm.coreml.quantize import coreml_fake_quantize
    from edge_export.llm.recipe import load_recipe

    layer = torch.nn.Linear(96, 48, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(48, 96, generator=torch.Generator().manual_seed(1)))
    want = linear_quantize_weights.blockwise_compress(layer.weight.detach().numpy().copy(), nbits=4,
                                                      mode="LINEAR_SYMMETRIC", signed=True, block_sizes=[1, 32])
    model = torch.nn.Sequential(layer).eval()
    coreml_fake_quantize(model, load_recipe("4bit").for_target("ios"))
    program = torch.export.export(model, (torch.randn(2, 96),)).run_decompositions({})
    mlmodel = ct.convert(program, inputs=[ct.TensorType(name="x", shape=(2, 96))], convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT32,
                         skip_model_load=True)
    mlmodel.save(str(tmp_path / "m.mlpackage"))
    loaded = mil.load(tmp_path / "m.mlpackage")
    assert "constexpr_blockwise_shift_scale" in loaded.op_types
    (weight,) = [v for v in loaded._consts.values() if isinstance(v, Blockwise)]
    assert not [v for v in loaded._consts.values() if getattr(v, "size", 0) >= 48 * 96]  # no float copy
    np.testing.assert_array_equal(weight.data, want.data)
    np.testing.assert_array_equal(weight.scale, want.scale)
    np.testing.assert_array_equal(weight.materialise(), constexpr_blockwise_shift_scale.decompress(
        weight.data, weight.scale, None))
    x = np.random.default_rng(0).standard_normal((2, 96)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})[next(iter(loaded.output_names))],
                               model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_recipes_map_to_weight_only_on_ios() -> None:
    from edge_export.llm.backend import get_backend
    from edge_export.llm.recipe import load_recipe

    backend = get_backend("ios")
    for name in ("8bit", "4bit"):
        generic = load_recipe(name)
        assert generic.activations == "int8-dynamic"
        assert backend.refusal(generic) is not None
        ios = generic.for_target("ios")
        assert ios.activations == "float32" and ios.weights == generic.weights and backend.refusal(ios) is None
        assert generic.for_target("android") == generic.for_target("no-such-target")


def test_target_overrides_are_checked(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[quantization]\nweights = "int4"\ngroup_size = 32\n[gates]\nmin_top1_agreement = 0.9\n'
                      'max_perplexity_ratio = 1.3\n[targets.ios]\nbits = 3\n')
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "ios", "--recipe", str(recipe),
                   "--out", str(tmp_path / "dist"))
    assert proc.returncode == 2 and "unknown key targets.ios.bits" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_tiny_lm_ios_4bit(tiny_packages: Path) -> None:
    pkg = tiny_packages / "ios-4bit"
    manifest = _check_package(pkg)
    metrics = manifest["parity"]["metrics"]
    assert metrics["top1_agreement"] >= 0.9
    ppl = metrics["perplexity"]
    assert ppl["float"] < ppl["artifact"] <= 1.3 * ppl["float"]
    # the reference is Core ML's own grid: the artifact scores what the fake-quantized model scores
    assert abs(ppl["artifact"] - ppl["pytorch_quantized"]) < 1e-3 * ppl["float"]
    assert "constexpr_blockwise_shift_scale" in _functions(pkg)["decode"].op_types
    # tied embeddings: int4 everywhere, so about 0.5 byte + a fp32 scale per 32 of every weight
    weights = sum(p.numel() for p in _tiny_model().parameters())
    assert manifest["artifact"]["bytes"] < 0.25 * 4 * weights


@pytest.mark.slow
@pytest.mark.extended
def test_qwen2_style_ios_fp32_and_4bit(tmp_path_factory) -> None:
    root = _export(tmp_path_factory, QWEN2, "qwen2ios", "fp32", "4bit")
    assert _check_package(root / "ios-fp32")["source"]["architecture"] == "Qwen2ForCausalLM"
    assert _check_package(root / "ios-4bit")["parity"]["metrics"]["top1_agreement"] >= 0.9


def test_fp16_is_ios_only_and_gated_by_agreement(tmp_path: Path) -> None:
    """fp16 arithmetic is teacher-forced gated; android (XNNPACK fp32) refuses it in one line."""
    from edge_export.llm.recipe import load_recipe

    fp16 = load_recipe("fp16")
    assert not fp16.exact and fp16.min_top1_agreement is not None and fp16.min_logits_cosine is None
    assert load_recipe("fp32").exact
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "android", "--recipe", "fp16",
                   "--out", str(tmp_path / "dist"))
    assert proc.returncode == 2 and "android cannot build recipe fp16: android computes in float32 only" \
        in proc.stderr, proc.stderr[-2000:]
