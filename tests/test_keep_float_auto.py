"""keep_float = "auto" on every target, and the worst-layer line of a failed gate.

The model (tests/sensitive_net.py) has one layer, ``head``, that int8 per-channel weights
destroy (7.7 dB alone) while the others quantize to ~60 dB; which layer that is follows
from its construction, not from the code under test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge_export.quant.mixed_precision import candidates
from edge_export.quant.recipe import parse_recipe

from .conftest import ROOT, export_json

MODEL = f"{Path(__file__).parent / 'sensitive_net.py'}:build"


def plain_recipe(target: str, folder: Path, base: str = "int8-static", auto: bool = False) -> Path:
    """A shipped recipe without bias correction (which rescues ``head``'s rounded-away row on its
    own) or GPTQ rounding (round to nearest: this file is about keep_float), optionally with
    keep_float = "auto" (set in the TOML, not by the flag)."""
    text = (ROOT / "recipes" / target / f"{base}.toml").read_text()
    name = f"{base}-auto" if auto else f"{base}-plain"
    text = text.replace(f'name = "{base}"', f'name = "{name}"')
    text = re.sub(r"^(keep_float|bias_correction|weight_rounding) = .*\n", "", text, flags=re.M)
    text = text.replace("[quantize]\n", "[quantize]\nbias_correction = false\nweight_rounding = \"nearest\"\n"
                        + ('keep_float = "auto"\n' if auto else ""), 1)
    path = folder / f"{target}-{name}.toml"
    path.write_text(text)
    return path


def auto_recipe(target: str, folder: Path, base: str = "int8-static") -> Path:
    return plain_recipe(target, folder, base, auto=True)


def export(target: str, out: Path, *recipes: str, extra: tuple[str, ...] = ()) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from sensitive_net import calibration

    calib = out / "calib.npz"
    calibration(str(calib))
    _proc, data = export_json("--model", MODEL, "--target", target, "--out", str(out / "dist"),
                              "--calibration-data", str(calib), "--no-cache", "--jobs", "1",
                              *[a for r in recipes for a in ("--recipe", r)], *extra)
    return data


def package(data: dict, recipe: str) -> dict:
    (found,) = [p for p in data["packages"] if p["recipe"] == recipe]
    return found


def check_auto(pkg: dict) -> None:
    assert pkg["status"] == "passed", pkg["parity"]["reason"]
    parity = json.loads((Path(pkg["path"]) / "parity.json").read_text())["parity"]
    layers = parity["layers"]
    alone = layers["snr_db_alone"]
    assert set(alone) == {"stem", "body", "head"}
    assert min(alone, key=alone.get) == "head" and alone["head"] < 15 < min(alone["stem"], alone["body"])
    assert "head" in layers["keep_float"]["chosen"]
    assert layers["keep_float"]["chosen"] == ["head"], "the smallest set: one layer suffices"
    assert layers["keep_float"]["attempts"][-1]["passed"] is True
    # Chosen on the 16 calibration samples (none spare past the 64 the recipe asks for), reported
    # on the 8 random parity inputs + the example.
    selection = layers["keep_float"]["selection"]
    assert [selection[k] for k in ("from", "samples", "overlaps_calibration")] == ["calibration-data", 16, True]
    assert parity["samples"] == 9
    snr = pkg["parity"]["outputs"]["output"]["snr_db"]
    assert snr >= 20.0  # the shipped int8-static gate on every target


@pytest.mark.slow
def test_tflite_auto_passes_and_failed_gate_names_the_worst_layer(tmp_path):
    """tflite's int8-static (bias correction off) keeps nothing float: on this model it fails its
    gate, and the one-line reason names ``head``; the auto copies (static and weight-only int8)
    keep exactly ``head`` and pass."""
    data = export("tflite", tmp_path, str(plain_recipe("tflite", tmp_path)), str(auto_recipe("tflite", tmp_path)),
                  str(auto_recipe("tflite", tmp_path, "int8-weight")))
    assert not data["ok"]
    shipped = package(data, "int8-static-plain")
    assert shipped["status"] == "failed"
    assert re.search(r"worst layer: head \(\d+\.\d dB when only it is quantized\)",
                     shipped["parity"]["reason"]), shipped["parity"]["reason"]
    assert "worst layer: head" in data["error"]["message"]
    check_auto(package(data, "int8-static-auto"))
    check_auto(package(data, "int8-weight-auto"))  # weight-only: AEQ named recipe + NO_QUANTIZE


@pytest.mark.slow
def test_android_auto_from_recipe_file(tmp_path):
    """PT2E path: candidates are checked on the quantized PyTorch reference before lowering (~30 s)."""
    report = tmp_path / "report.html"
    data = export("android", tmp_path, str(auto_recipe("android", tmp_path)), extra=("--report", str(report)))
    check_auto(package(data, "int8-static-auto"))
    html = report.read_text()
    assert "keep_float = auto: 1 of 3 layers kept float (head)" in html
    assert html.index("<td>head</td>") < html.index("<td>stem</td>"), "most sensitive first"


@pytest.mark.slow
@pytest.mark.extended
def test_ios_auto_with_the_cli_shortcut(tmp_path):
    """``--keep-float auto`` overrides the shipped recipe (CoreMLQuantizer + convert: ~75 s)."""
    data = export("ios", tmp_path, str(plain_recipe("ios", tmp_path)), extra=("--keep-float", "auto"))
    check_auto(package(data, "int8-static-plain"))


def test_auto_is_a_recipe_value_and_other_strings_are_refused():
    base = 'name = "x"\ntarget = "tflite"\nsummary = "s"\n[quantize]\nscheme = "aeq-static"\n'
    gate = "[parity]\ncosine = 0.99\n"
    assert parse_recipe(base + 'keep_float = "auto"\n' + gate, "t").param("keep_float") == "auto"
    with pytest.raises(Exception, match="keep_float"):
        parse_recipe(base + 'keep_float = "automatic"\n' + gate, "t")


def test_candidates_walk_up_from_the_estimate_to_every_layer():
    assert candidates(0, 0) == [0]
    assert candidates(2, 3) == [2, 3]
    assert candidates(1, 20) == [1, 2, 4, 8, 16, 20]


class Nested(__import__("torch").nn.Module):
    """Nested module paths (``blocks.1.0``), as in MobileNet-style nets."""

    def __init__(self) -> None:
        from torch import nn

        super().__init__()
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4),
                                                    nn.ReLU6()) for _ in range(3)))

    def forward(self, x):
        return self.blocks(x).mean(dim=(2, 3))


@pytest.mark.slow
def test_tflite_keep_float_maps_nested_module_paths_onto_ops(tmp_path):
    """keep_float = ["blocks.1.0"] on tflite: that conv's weights stay float32 in the
    flatbuffer, the other two convs' weights are int8."""
    import numpy as np
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edge_export.build.exporter import BuildContext, get_exporter
    from edge_export.quant.mechanisms import with_keep_float
    from edge_export.quant.recipe import builtin_recipes

    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    program = torch.export.export(Nested().eval(), (x,))
    exporter = get_exporter("tflite")
    recipe = with_keep_float(builtin_recipes("tflite")["int8-static"], ["blocks.1.0"])
    ctx = BuildContext(calibration=[(torch.randn(1, 4, 8, 8),) for _ in range(8)],
                       reload_module=lambda: None, example_inputs=(x,), input_names=["x"],
                       output_names=["y"])
    prepared = exporter.quantize(program, recipe, ctx)
    prepared.example_inputs = (x,)
    exporter.lower(prepared, recipe, tmp_path / "m.tflite")
    weights = {}
    for t in Interpreter(model_path=str(tmp_path / "m.tflite")).get_tensor_details():
        if len(t["shape"]) == 4 and t["shape"][0] == 4 and "Conv2d" in t["name"]:
            # fused ops join several locations: the weight's own is the block's Conv2d_0
            block = next(b for b in range(3) if f"Sequential_{b}/torch.nn.modules.conv.Conv2d_0;" in t["name"])
            weights.setdefault(block, set()).add(np.dtype(t["dtype"]).name)
    assert weights[1] == {"float32"}, weights
    assert "int8" in weights[0] and "int8" in weights[2], weights
