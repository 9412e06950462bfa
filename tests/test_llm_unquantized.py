"""Issue 24: an LLM recipe's grouped int4 cannot quantize a Linear whose input width is not a
multiple of the group size; android and ios leave it float, and the manifest lists it
(``unquantized``: the layers and their share of the weights). tflite refuses such a recipe.

The tiny LM (hidden 128, MLP 384, 4 layers, tied 1024 x 128 embedding) in groups of 96:
only the MLP's down_proj (384 inputs) divides, every other Linear stays float."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_export.llm.recipe import parse_recipe
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = ROOT / "examples" / "tiny_lm"
G96 = ('name = "g96"\n[quantization]\nweights = "int4"\ngroup_size = 96\nactivations = "int8-dynamic"\n'
       '[gates]\nmin_top1_agreement = 0.5\nmax_perplexity_ratio = 2.0\n'
       '[targets.ios]\nactivations = "float32"\n')
LEFT_FLOAT = [f"model.layers.{i}.{name}" for i in range(4)
              for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                           "mlp.gate_proj", "mlp.up_proj")] + ["lm_head"]
# q, o: 128 x 128; k, v: 64 x 128 (2 KV heads of 32); gate, up: 384 x 128; lm_head is the tied table.
LEFT_FLOAT_WEIGHTS = 4 * (2 * 128 * 128 + 2 * 64 * 128 + 2 * 384 * 128) + 1024 * 128


def _tiny_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_LM, local_files_only=True).eval()


def _share(model) -> float:
    return LEFT_FLOAT_WEIGHTS / sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("target", ["android", "ios"])
def test_layers_a_group_does_not_divide_are_recorded(target: str) -> None:
    import torch

    from edge_export.llm.backend import get_backend
    from edge_export.llm.quantize import unquantized

    model = _tiny_model()
    share = _share(model)
    quantized = get_backend(target).quantize(model, parse_recipe(G96, "g96.toml").for_target(target))
    record = unquantized(quantized)
    assert record["layers"] == LEFT_FLOAT
    assert record["weight_share"] == pytest.approx(share, abs=1e-6)
    # and those layers really are float: torchao swaps a quantized weight's class, Core ML's
    # scheme attaches its scales to the module
    for name, module in quantized.named_modules():
        if isinstance(module, torch.nn.Linear):
            float_weight = (type(module.weight) is torch.nn.Parameter if target == "android"
                            else not any("_COREML_" in b for b, _ in module.named_buffers()))
            assert float_weight == (name in LEFT_FLOAT), name


def test_tflite_quantizes_every_linear_or_refuses() -> None:
    from edge_export.errors import UsageError
    from edge_export.llm.backend import get_backend
    from edge_export.llm.quantize import unquantized

    backend = get_backend("tflite")
    int4 = parse_recipe(G96.replace("group_size = 96", "group_size = 32"), "g32.toml").for_target("tflite")
    assert unquantized(backend.quantize(_tiny_model(), int4)) == {"layers": [], "weight_share": 0.0}
    with pytest.raises(UsageError, match="not a multiple of the block size"):
        backend.quantize(_tiny_model(), parse_recipe(G96, "g96.toml").for_target("tflite"))


def test_a_float_recipe_records_nothing() -> None:
    from edge_export.llm.backend import get_backend
    from edge_export.llm.quantize import unquantized

    fp32 = parse_recipe('name = "f"\n[gates]\nmin_logits_cosine = 0.99\n', "f.toml")
    assert unquantized(get_backend("android").quantize(_tiny_model(), fp32)) is None


@pytest.mark.slow
def test_android_manifest_lists_the_float_layers(tmp_path: Path) -> None:
    """The tiny LM through `edge-export llm` on android with groups of 96 (~40 s)."""
    from edge_export.llm.package import read_llm_package

    recipe = tmp_path / "g96.toml"
    recipe.write_text(G96)
    out = tmp_path / "dist"
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "android", "--recipe", str(recipe),
                   "--max-context", "64", "--name", "tiny", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_llm_package(out / "tiny-0.1.0" / "android-g96")  # schema-validated
    assert manifest["unquantized"]["layers"] == LEFT_FLOAT
    assert manifest["unquantized"]["weight_share"] == pytest.approx(_share(_tiny_model()), abs=1e-6)
    assert json.loads((out / "tiny-0.1.0" / "android-g96" / "manifest.json").read_text()) == manifest
