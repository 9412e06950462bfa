"""Recipe keep-float patterns resolve to the right layers; quantized Core ML lowering keeps requantizations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_export.quant.mechanisms import keep_float_filter, weighted_layers


class UpsampleFirst(nn.Module):
    """A top-level interpolate (bilinear) before the first conv: not a weighted layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.stem(x).mean(dim=(2, 3)))


def graph() -> torch.fx.GraphModule:
    return torch.export.export(UpsampleFirst().eval(), (torch.randn(1, 1, 4, 4),)).module()


def test_weighted_layers_skip_root_level_ops():
    assert weighted_layers(graph()) == ["stem", "head"]


def test_first_and_last_keep_only_those_layers_float():
    gm = graph()
    quantize = keep_float_filter(["@first", "@last"], gm)
    decided = {n.name: quantize(n) for n in gm.graph.nodes if n.op == "call_function"}
    assert any(decided.values()), "some nodes must still be quantized"
    for node in gm.graph.nodes:
        if node.op == "call_function" and "conv" in str(node.target):
            assert decided[node.name] is False
        if node.op == "call_function" and "upsample" in str(node.target):
            assert decided[node.name] is True


def test_no_patterns_means_no_filter():
    assert keep_float_filter([], graph()) is None


class PoolFlattenClassifier(nn.Module):
    """conv -> ReLU6 -> global pool -> view -> linear: PT2E requantizes at the view
    (pool output [0, 6], zero point 0 -> classifier input with its own range)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(nn.functional.relu6(self.conv(x)))
        return self.fc(x.view(x.shape[0], -1))


@pytest.mark.slow
def test_coreml_int8_static_keeps_a_requantizing_flatten(tmp_path):
    """The lowered ML Program must compute what the PT2E reference computes: coremltools'
    int_op_canonicalization used to turn dequantize -> reshape -> quantize into an integer
    reshape that ignores the change of scale and zero point (EfficientNet-Lite0: -11 dB)."""
    from edge_export.exporters.coreml import CoreMLExporter
    from edge_export.exporters.coreml.schemes import pt2e_coreml

    from edge_export.build.exporter import BuildContext
    from edge_export.quant.mechanisms import with_keep_float
    from edge_export.quant.recipe import builtin_recipes

    torch.manual_seed(0)
    model = PoolFlattenClassifier().eval()
    samples = [(torch.randn(1, 3, 8, 8),) for _ in range(16)]
    recipe = with_keep_float(builtin_recipes("ios")["int8-static"], [])  # the scheme takes a concrete set
    context = BuildContext(calibration=samples, reload_module=lambda: model, example_inputs=samples[0],
                           input_names=["x"], output_names=["logits"])
    prepared = pt2e_coreml(torch.export.export(model, samples[0]), recipe, context)
    prepared.example_inputs, prepared.input_names, prepared.output_names = samples[0], ("x",), ("logits",)
    exporter = CoreMLExporter()
    exporter.lower(prepared, recipe, tmp_path / "model.mlpackage")
    _runtime, run = exporter.load_runtime(tmp_path / "model.mlpackage")
    for (x,) in samples[:4]:
        expected = prepared.reference(x).numpy()
        (got,) = run([x.numpy()])
        noise = ((got.reshape(expected.shape) - expected) ** 2).sum()
        assert 10 * np.log10((expected ** 2).sum() / max(noise, 1e-30)) > 30.0


class IntegerIndexArithmetic(nn.Module):
    """``arange(n) + 1`` used as an index, as transformers builds attention masks: PT2E's
    XNNPACK transform made the scalar a float constant, so the index became float."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(x.shape[-1]) + 1
        return self.fc(x)[:, idx % x.shape[-1]]


def test_pt2e_keeps_integer_scalars_integer():
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    from edge_export.quant.mechanisms import run_pt2e

    x = torch.randn(1, 8)
    program = torch.export.export(IntegerIndexArithmetic().eval(), (x,))
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    quantized = run_pt2e(program, quantizer, [(x,)])  # raised IndexError before the fix
    with torch.no_grad():
        expected = program.module()(x)
        got = quantized(x)
    assert got.shape == expected.shape
    assert torch.nn.functional.cosine_similarity(got, expected).item() > 0.99
