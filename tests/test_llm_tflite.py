"""edge-export llm --target tflite end to end: the trained tiny LM at fp32 and 4bit and a
Qwen2-style config at fp32, verified by generation on the LiteRT interpreter, packaged and
run again with `generate`; quantized embeddings on tflite and android. Expected tokens come
from transformers' own ``generate``, expected weights from the flatbuffer itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli
from tests.test_llm import QWEN2, TINY_LM, _hf_greedy, _manifest, check_generate_streams_the_golden_continuation

CONTEXT = 64


def _export(out: Path, model: str, name: str, recipes: tuple[str, ...], target: str = "tflite",
            context: int = CONTEXT) -> Path:
    args = [a for r in recipes for a in ("--recipe", r)]
    proc = run_cli("llm", "--model", model, "--target", target, *args, "--max-context", str(context),
                   "--name", name, "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / f"{name}-0.1.0"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("tflite"), str(TINY_LM), "tinylm", ("fp32", "4bit"))


def _check_goldens(pkg: Path, model) -> None:
    """fp32: the artifact's greedy continuation is transformers' own greedy decoding."""
    for golden in _manifest(pkg)["golden"]:
        data = json.loads((pkg / golden["path"]).read_text())
        assert len(data["continuation_ids"]) == 32
        assert data["continuation_ids"] == _hf_greedy(model, data["prompt_ids"], 32)


def _signatures(tflite: Path, config) -> None:
    """LiteRT's generative layout, read with the interpreter: prefill_N and decode, tokens,
    input_pos, kv_cache_k_i / kv_cache_v_i as [1, context, kv heads, head dim]."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite))
    caches = {f"kv_cache_{kind}_{i}" for kind in "kv" for i in range(config.num_hidden_layers)}
    signatures = interpreter.get_signature_list()
    assert set(signatures) == {f"prefill_{CONTEXT - 1}", "decode"}
    for name, tokens in ((f"prefill_{CONTEXT - 1}", CONTEXT - 1), ("decode", 1)):
        assert set(signatures[name]["inputs"]) == {"tokens", "input_pos"} | caches
        assert set(signatures[name]["outputs"]) == {"logits"} | caches
        runner = interpreter.get_signature_runner(name)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        assert list(inputs["tokens"]["shape"]) == [1, tokens] and inputs["tokens"]["dtype"] == np.int32
        assert list(inputs["input_pos"]["shape"]) == [tokens]
        head_dim = config.hidden_size // config.num_attention_heads
        for cache in caches:
            assert list(inputs[cache]["shape"]) == [1, CONTEXT, config.num_key_value_heads, head_dim]
            assert list(outputs[cache]["shape"]) == list(inputs[cache]["shape"])
        assert list(outputs["logits"]["shape"]) == [1, tokens, config.vocab_size]


@pytest.mark.slow
def test_tiny_lm_tflite_fp32_and_4bit(tiny_lm: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()
    fp32, q4 = tiny_lm / "tflite-fp32", tiny_lm / "tflite-4bit"
    for pkg in (fp32, q4):
        manifest = _manifest(pkg)
        assert manifest["parity"]["status"] == "passed" and manifest["parity"]["runtime"] == "litert"
        assert {"model.tflite", "tokenizer.json", "generation_config.json"} <= {f["path"] for f in manifest["files"]}
        _signatures(pkg / "model.tflite", model.config)
    _check_goldens(fp32, model)
    for pkg in (fp32, q4):  # the two signatures share one copy of every weight
        _, flat, buffers = _model(pkg / "model.tflite")
        weights = [{t.buffer for t in sg.tensors if len(buffers[t.buffer]) >= 4096} for sg in flat.subgraphs]
        assert len(weights) == 2 and weights[0] == weights[1] and len(weights[0]) >= 29
    metrics = _manifest(q4)["parity"]["metrics"]
    assert metrics["top1_agreement"] >= 0.9
    assert metrics["perplexity"]["float"] < metrics["perplexity"]["artifact"] <= 1.3 * metrics["perplexity"]["float"]
    # int4 block-32 Linear weights: 0.5 byte + a scale per 32 instead of 4 bytes (a tied output
    # layer gets its own int4 copy while the embedding table stays float, so it saves nothing)
    tied = model.get_input_embeddings().weight
    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules()
                       if isinstance(m, torch.nn.Linear) and m.weight is not tied)
    saved = (fp32 / "model.tflite").stat().st_size - (q4 / "model.tflite").stat().st_size
    assert saved >= 0.75 * linear_bytes
    # the default 4bit keeps the embedding table float: one float32 [vocab, hidden] tensor remains
    embedding = (model.config.vocab_size, model.config.hidden_size)
    assert ("FLOAT32", embedding) in _constants(q4 / "model.tflite")


@pytest.mark.slow
def test_reference_weights_are_the_artifacts(tiny_lm: Path) -> None:
    """The same-quantization PyTorch reference (weights snapped to AEQ's grid in PyTorch)
    holds exactly the numbers ai-edge-quantizer wrote into the 4-bit flatbuffer."""
    import torch
    from transformers import AutoModelForCausalLM

    from edge_export.llm.litert import snap_to_grid

    model = AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()
    stored = _dequantized_int4(tiny_lm / "tflite-4bit" / "model.tflite")
    checked = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            snapped = snap_to_grid(module.weight.detach(), 4, 32).numpy()
            matches = [w for w in stored.get(snapped.shape, []) if np.allclose(w, snapped, rtol=0, atol=1e-6)]
            checked += len(matches) > 0
    assert checked == sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@pytest.mark.slow
def test_verify_regenerates_the_golden_prompts(tiny_lm: Path, tmp_path: Path) -> None:
    """``edge-export verify`` takes LLM packages: LLM schema, hashes, and every golden prompt decoded
    again token for token; a recorded continuation the artifact does not produce fails (exit 1),
    even with its hash made consistent."""
    import json
    import shutil

    from edge_export.package.hashing import file_sha256

    proc = run_cli("verify", str(tiny_lm / "tflite-4bit"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 golden prompts re-generated token for token on litert" in proc.stdout
    forged = shutil.copytree(tiny_lm / "tflite-fp32", tmp_path / "forged")
    golden = json.loads((forged / "golden/prompt_001.json").read_text())
    golden["continuation_ids"][5] = (golden["continuation_ids"][5] + 1) % 1024
    (forged / "golden/prompt_001.json").write_text(json.dumps(golden))
    manifest = json.loads((forged / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "golden/prompt_001.json":
            path = forged / entry["path"]
            entry.update(sha256=file_sha256(path), bytes=path.stat().st_size)
    (forged / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("verify", str(forged), cwd=ROOT)
    assert proc.returncode == 1
    assert "golden prompt 1: the artifact's greedy continuation differs from the recorded one at step 5" in proc.stderr


def test_generate_on_the_tflite_package(tiny_lm: Path) -> None:
    check_generate_streams_the_golden_continuation(tiny_lm / "tflite-fp32")


@pytest.mark.slow
@pytest.mark.extended  # ~60 s on the loaded 2-core machine; the tiny LM covers the capability by default
def test_qwen2_style_tflite_fp32(tmp_path: Path) -> None:
    import importlib.util

    root = _export(tmp_path, QWEN2, "qwen2", ("fp32",))
    spec = importlib.util.spec_from_file_location("qwen2_random", TINY_LM / "qwen2_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    pkg = root / "tflite-fp32"
    assert _manifest(pkg)["source"]["architecture"] == "Qwen2ForCausalLM"
    _signatures(pkg / "model.tflite", model.config)
    _check_goldens(pkg, model)


@pytest.mark.slow
@pytest.mark.extended
def test_quantized_embeddings(tiny_lm: Path, tmp_path: Path) -> None:
    """4bit-emb: the embedding table is int4 too, on tflite (one INT4 [vocab, hidden]
    tensor, no float one) and on android (torchao, fused to embedding_4bit); both pass the
    4-bit gates and are at most 0.2x the float parameter bytes on android."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()
    embedding = (model.config.vocab_size, model.config.hidden_size)
    tflite = _export(tmp_path / "t", str(TINY_LM), "emb", ("4bit-emb",)) / "tflite-4bit-emb"
    constants = _constants(tflite / "model.tflite")
    assert ("INT4", embedding) in constants and ("FLOAT32", embedding) not in constants
    assert tflite.joinpath("model.tflite").stat().st_size < (tiny_lm / "tflite-4bit" / "model.tflite").stat().st_size
    android = _export(tmp_path / "a", str(TINY_LM), "emb", ("4bit-emb",), target="android", context=32)
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert (android / "android-4bit-emb" / "model.pte").stat().st_size <= 0.2 * float_bytes
    for pkg in (tflite, android / "android-4bit-emb"):
        metrics = _manifest(pkg)["parity"]["metrics"]
        assert metrics["top1_agreement"] >= 0.9 and metrics["perplexity_ratio"] <= 1.3
    del torch


def test_tflite_refuses_a_recipe_litert_cannot_build(tmp_path: Path) -> None:
    recipe = tmp_path / "g64.toml"
    recipe.write_text('name = "g64"\n[quantization]\nweights = "int4"\ngroup_size = 64\nactivations = "int8-dynamic"\n'
                      '[gates]\nmin_top1_agreement = 0.9\nmax_perplexity_ratio = 1.3\n')
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "tflite", "--recipe", str(recipe),
                   "--out", str(tmp_path / "dist"), cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "tflite cannot build recipe g64" in errors[0]
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_quantize_embeddings_needs_quantized_weights(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[quantization]\nweights = "float32"\nquantize_embeddings = true\n'
                      '[gates]\nmin_logits_cosine = 0.9999\n')
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "tflite", "--recipe", str(recipe),
                   "--out", str(tmp_path / "d"), cwd=ROOT)
    assert proc.returncode == 2 and "quantize_embeddings needs quantized weights" in proc.stderr


def _model(tflite: Path):
    """(schema module, ModelT, buffer bytes by index): large buffers live after the
    flatbuffer, addressed by offset and size."""
    from ai_edge_litert import schema_py_generated as schema

    raw = tflite.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    buffers = [bytes(b.data) if b.data is not None else raw[b.offset:b.offset + b.size] if b.offset > 1 else b""
               for b in model.buffers]
    return schema, model, buffers


def _constants(tflite: Path) -> set[tuple[str, tuple[int, ...]]]:
    """(type name, shape) of every tensor backed by a non-empty buffer."""
    schema, model, buffers = _model(tflite)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return {(names[t.type], tuple(int(d) for d in t.shape)) for sg in model.subgraphs for t in sg.tensors
            if buffers[t.buffer]}


def _dequantized_int4(tflite: Path) -> dict[tuple[int, ...], list[np.ndarray]]:
    """Every INT4 weight of the flatbuffer, unpacked (low nibble first) and multiplied by its
    blockwise fp16 scales, keyed by shape."""
    schema, model, buffers = _model(tflite)
    out: dict[tuple[int, ...], list[np.ndarray]] = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.type != schema.TensorType.INT4 or not buffers[t.buffer]:
                continue
            packed = np.frombuffer(buffers[t.buffer], dtype=np.uint8)
            nibbles = np.stack([packed & 0xF, packed >> 4], -1).reshape(-1)[:int(np.prod(t.shape))]
            q = np.where(nibbles > 7, nibbles.astype(np.int16) - 16, nibbles).astype(np.float32).reshape(t.shape)
            block = t.quantization.details.blockSize
            scales_tensor = sg.tensors[t.quantization.details.scales]
            scales = np.frombuffer(buffers[scales_tensor.buffer], dtype=np.float16)
            scales = scales.astype(np.float32).reshape(t.shape[0], t.shape[1] // block)
            weights = (q.reshape(t.shape[0], -1, block) * scales[..., None]).reshape(t.shape)
            out.setdefault(tuple(int(d) for d in t.shape), []).append(weights)
    return out
