"""edge-export llm / generate end to end: the trained tiny LM (Llama) and a Qwen2-style
random config, exported to android at fp32 and 4bit, verified by generation, packaged
and run again with `generate`. Expected tokens come from transformers' own
``generate`` here, never from edge-export's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = ROOT / "examples" / "tiny_lm"
QWEN2 = f"{TINY_LM / 'qwen2_random.py'}:build"


def _export(tmp_path_factory, model: str, name: str) -> Path:
    out = tmp_path_factory.mktemp(name)
    proc = run_cli("llm", "--model", model, "--target", "android", "--recipe", "fp32", "--recipe", "4bit",
                   "--max-context", "128", "--name", name, "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / f"{name}-0.1.0"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, str(TINY_LM), "tinylm")


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, QWEN2, "qwen2")


def _manifest(pkg: Path) -> dict:
    from edge_export.llm.package import read_llm_package

    return read_llm_package(pkg)  # schema-validated


def _hf_greedy(model, prompt_ids: list[int], steps: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=steps, min_new_tokens=steps,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def _runner_metadata(pte: Path) -> dict:
    """What ExecuTorch's LLM runner reads from the program, read with the runtime itself."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(pte))
    names = ("get_max_context_len", "get_max_seq_len", "get_bos_id", "get_eos_ids", "get_vocab_size",
             "use_kv_cache")
    return {n: list(program.load_method(n).execute([])) for n in names}


def _check_packages(root: Path, model) -> None:
    fp32, q4 = root / "android-fp32", root / "android-4bit"
    for pkg in (fp32, q4):
        manifest = _manifest(pkg)
        assert manifest["parity"]["status"] == "passed"
        names = {f["path"] for f in manifest["files"]}
        assert {"model.pte", "tokenizer.json", "generation_config.json", "parity.json"} <= names
        generation = json.loads((pkg / "generation_config.json").read_text())
        assert generation["max_context"] == 128 and generation["eos_token_ids"] == [2]
        assert generation["bos_token_id"] == 1
        assert _runner_metadata(pkg / "model.pte") == {
            "get_max_context_len": [128], "get_max_seq_len": [127], "get_bos_id": [1], "get_eos_ids": [2],
            "get_vocab_size": [1024], "use_kv_cache": [True]}
    # fp32: the artifact's greedy continuation is transformers' own greedy decoding
    for golden in _manifest(fp32)["golden"]:
        data = json.loads((fp32 / golden["path"]).read_text())
        assert data["continuation_ids"] == _hf_greedy(model, data["prompt_ids"], 32)
    metrics = _manifest(q4)["parity"]["metrics"]
    assert metrics["top1_agreement"] >= 0.9
    assert metrics["perplexity"]["artifact"] <= 1.3 * metrics["perplexity"]["float"]
    # int4 group-32 Linear weights: 0.5 byte + a scale per 32 instead of 4 bytes; embeddings stay float
    import torch

    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    saved = (fp32 / "model.pte").stat().st_size - (q4 / "model.pte").stat().st_size
    assert saved >= 0.75 * linear_bytes


@pytest.mark.slow
def test_tiny_lm_android_fp32_and_4bit(tiny_lm: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()
    _check_packages(tiny_lm, model)
    # a trained model: the 4-bit loss is visible but small, and float perplexity is far from vocab size
    ppl = _manifest(tiny_lm / "android-4bit")["parity"]["metrics"]["perplexity"]
    assert ppl["float"] < 40 < model.config.vocab_size
    assert ppl["artifact"] > ppl["float"]


@pytest.mark.slow
@pytest.mark.extended
def test_qwen2_style_android_fp32_and_4bit(qwen2: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("qwen2_random", TINY_LM / "qwen2_random.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _check_packages(qwen2, module.build())
    assert _manifest(qwen2 / "android-fp32")["source"]["architecture"] == "Qwen2ForCausalLM"


@pytest.mark.slow
def test_bundle_puts_llm_packages_where_the_text_generation_screen_lists_them(tiny_lm: Path,
                                                                               tmp_path: Path) -> None:
    """android LLM packages land in assets/llm/<dir>/ (LlmPackage.kt lists that folder), byte for
    byte; the model index (image models) does not list them; the ios app refuses them."""
    apps = tmp_path / "apps"
    (apps / "android_demo/app/src/main/assets").mkdir(parents=True)
    (apps / "ios_demo/EdgeExportDemo/Resources").mkdir(parents=True)
    proc = run_cli("bundle", "--app", "android", "--apps-root", str(apps), str(tiny_lm / "android-4bit"))
    assert proc.returncode == 0, proc.stderr
    dest = apps / "android_demo/app/src/main/assets/llm/tinylm-android-4bit"
    assert proc.stdout.strip() == str(dest)
    for rel in ("manifest.json", "model.pte", "tokenizer.json", "generation_config.json"):
        assert (dest / rel).read_bytes() == (tiny_lm / "android-4bit" / rel).read_bytes()
    index = json.loads((apps / "android_demo/app/src/main/assets/models/index.json").read_text())
    assert index["models"] == []
    proc = run_cli("bundle", "--app", "ios", "--apps-root", str(apps), str(tiny_lm / "android-4bit"))
    assert proc.returncode == 2 and "does not run android LLM packages" in proc.stderr
    assert not (apps / "ios_demo/EdgeExportDemo/Resources/Models/LLM").exists()


@pytest.mark.slow
def test_generate_streams_the_golden_continuation(tiny_lm: Path) -> None:
    check_generate_streams_the_golden_continuation(tiny_lm / "android-fp32")


def check_generate_streams_the_golden_continuation(pkg: Path) -> None:
    """``edge-export generate`` prints the prompt and the package's golden continuation, with speeds."""
    from tokenizers import Tokenizer

    golden = json.loads((pkg / "golden" / "prompt_000.json").read_text())
    proc = run_cli("generate", str(pkg), "--prompt", golden["prompt"], "--max-new-tokens", "20", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = Tokenizer.from_file(str(TINY_LM / "tokenizer.json")).decode(golden["continuation_ids"][:20])
    assert proc.stdout == golden["prompt"] + expected + "\n"
    assert "prefill 7 tokens at" in proc.stderr and "decode 19 tokens at" in proc.stderr


def _one_line_error(proc, code: int, words: str) -> None:
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_model_directory(tmp_path: Path) -> None:
    proc = run_cli("llm", "--model", str(tmp_path / "nope"), "--target", "android", "--out", str(tmp_path / "dist"))
    _one_line_error(proc, 2, "does not exist")


def test_not_a_causal_lm(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(4, 4)\n")
    proc = run_cli("llm", "--model", f"{tmp_path / 'm.py'}:build", "--target", "android",
                   "--out", str(tmp_path / "dist"))
    _one_line_error(proc, 2, "not a transformers causal LM")


def test_checkpoint_of_a_non_causal_model(tmp_path: Path) -> None:
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "vit")
    proc = run_cli("llm", "--model", str(tmp_path / "vit"), "--target", "android", "--out", str(tmp_path / "dist"))
    _one_line_error(proc, 2, "not a causal language model")


def test_max_context_beyond_the_model(tmp_path: Path) -> None:
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "android", "--max-context", "4096",
                   "--out", str(tmp_path / "dist"))
    _one_line_error(proc, 2, "exceeds the model's max_position_embeddings 512")
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_generate_refuses_a_non_llm_package(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "name": "x"}))
    proc = run_cli("generate", str(tmp_path), "--prompt", "hi")
    _one_line_error(proc, 2, "not an LLM package")


def test_unknown_recipe_is_refused_before_loading(tmp_path: Path) -> None:
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "android", "--recipe", "3bit",
                   "--out", str(tmp_path / "dist"))
    _one_line_error(proc, 2, "unknown LLM recipe '3bit'")


@pytest.mark.slow
def test_failed_gate_publishes_nothing(tmp_path: Path) -> None:
    """A cosine floor above 1 cannot pass: exit 1, the package only under OUT/.failed/ (on the
    smallest LM that shows it, so CI runs it)."""
    recipe = tmp_path / "strict.toml"
    recipe.write_text('name = "strict"\n[quantization]\nweights = "float32"\n'
                      '[gates]\ngreedy_steps = 4\nmin_logits_cosine = 1.5\n')
    out = tmp_path / "dist"
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "android", "--recipe", str(recipe),
                   "--max-context", "32", "--name", "q", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "gate failed: logits cosine" in proc.stderr
    assert not (out / "q-0.1.0").exists()
    failed = _manifest(out / ".failed" / "q-0.1.0" / "android-strict")
    assert failed["parity"]["status"] == "failed"
    assert [p.name for p in out.iterdir()] == [".failed"]  # no temporaries left


@pytest.mark.slow  # 27-35 s at load 5-8 on 2 cores, mostly imports and transformers' generate
def test_cached_eager_reference_is_the_recomputing_one() -> None:
    """Large models' eager reference extends transformers' DynamicCache instead of recomputing
    the whole sequence each step: on the tiny LM it gives transformers' greedy tokens and the
    recomputing reference's logits, also when a call does not continue the cache."""
    import numpy as np
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from edge_export.llm import evaluation as ev

    model = AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()
    prompt = np.array(Tokenizer.from_file(str(TINY_LM / "tokenizer.json")).encode(ev.GOLDEN_PROMPTS[0]).ids)
    full, cached = ev.EagerSession(model, 127, 128), ev.EagerSession(model, 127, 128, cached=True)
    tokens, logits = ev.greedy(cached, prompt, 12)
    assert tokens == _hf_greedy(model, prompt.tolist(), 12)
    np.testing.assert_allclose(logits, ev.greedy(full, prompt, 12)[1], atol=1e-4)
    window = np.arange(3, 40)
    np.testing.assert_allclose(cached.forward(window, 0), full.forward(window, 0), atol=1e-4)
    np.testing.assert_allclose(cached.forward(window[5:9], 5), full.forward(window[5:9], 5), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ios", "tflite"])
def test_quantized_export_frees_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """Once a quantized build's exporter has converted its model, no tensor holds the weights'
    memory any more (the 1.1 B benchmark's peak RSS depends on it: edge_export/llm/README.md,
    'Memory and large models'), though the caller still holds the module."""
    import gc

    import torch

    from edge_export.llm.backend import ExportSpec, get_backend
    from edge_export.llm.model import load_lm
    from edge_export.llm.recipe import load_recipe

    monkeypatch.setenv("RESOURCE_CONSTANT_NUMEL_THRESHOLD", "1")  # litert-torch: every weight a resource, as at 1 B
    backend, recipe = get_backend(target), load_recipe("4bit").for_target(target)
    model = backend.quantize(load_lm(str(TINY_LM)).model, recipe)
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    spec = ExportSpec(max_context=64, max_seq_len=63, bos_id=1, eos_ids=[2], vocab_size=1024)
    backend.export(model, spec, recipe, tmp_path / backend.artifact_name)
    gc.collect()

    def storage(obj: object) -> int | None:
        try:
            return obj.untyped_storage().data_ptr() if isinstance(obj, torch.Tensor) else None
        except (RuntimeError, NotImplementedError):  # fake tensors left by tracing have no data
            return None

    assert not [o for o in gc.get_objects() if storage(o) in storages]
    assert {p.device.type for p in model.parameters()} == {"meta"}
