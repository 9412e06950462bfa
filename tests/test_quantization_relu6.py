"""android int8-static on a ReLU6 network: conv -> BN -> ReLU6 must be quantized as one
fused op (one observer on the clamp output), as XNNPACK executes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


class ReLU6DepthwiseNet(nn.Module):
    """MobileNet/EfficientNet-Lite in miniature: conv -> BN -> ReLU6 -> depthwise conv -> BN
    -> ReLU6 -> pointwise, with pre-clamp ranges of tens of units."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
                                nn.ReLU6())
        self.pw = nn.Conv2d(16, 8, 1)
        with torch.no_grad():  # a trained net's BN gains: wide pre-activation ranges, ReLU6 clips most of it
            for bn in (self.stem[1], self.dw[1]):
                bn.weight.uniform_(4.0, 8.0)
                bn.bias.uniform_(-2.0, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(self.stem(x))).flatten(1)  # no pooling: it would average the error away


def snr_db(expected: np.ndarray, got: np.ndarray) -> float:
    noise = ((got.reshape(expected.shape) - expected) ** 2).sum()
    return float(10 * np.log10((expected ** 2).sum() / max(noise, 1e-30)))


@pytest.fixture(scope="module")
def net_and_samples():
    torch.manual_seed(0)
    model = ReLU6DepthwiseNet().eval()
    samples = [(torch.randn(1, 3, 8, 8),) for _ in range(24)]
    return model, samples


def quantized(model, samples, scheme):
    from edge_export.build.exporter import BuildContext
    from edge_export.quant.mechanisms import with_keep_float
    from edge_export.quant.recipe import builtin_recipes

    recipe = with_keep_float(builtin_recipes("android")["int8-static"], [])  # the scheme takes a concrete set
    context = BuildContext(calibration=samples[:16], reload_module=lambda: model, example_inputs=samples[0],
                           input_names=["x"], output_names=["logits"])
    return scheme(torch.export.export(model, samples[0]), recipe, context), recipe


def test_conv_relu6_is_one_quantized_op(net_and_samples):
    """No observer between a conv and its ReLU6: the conv output is never quantized on its own."""
    from edge_export.exporters.executorch.schemes import pt2e_xnnpack

    model, samples = net_and_samples
    prepared, _recipe = quantized(model, samples, pt2e_xnnpack)
    clamps = [n for n in prepared.program.graph.nodes if "hardtanh" in str(n.target)]
    assert len(clamps) == 2
    for clamp in clamps:
        assert "conv2d" in str(clamp.args[0].target), f"{clamp.name} follows {clamp.args[0].target}"
        assert len(clamp.args[0].users) == 1


@pytest.mark.slow
def test_android_int8_static_relu6_net_is_near_float(net_and_samples, tmp_path):
    """The lowered .pte against the float model: 35.9 dB with the fused annotation, 30.0 dB when
    each conv output is observed before its clamp (ExecuTorch 1.5's XNNPACKQuantizer as is)."""
    from edge_export.exporters.executorch.schemes import pt2e_xnnpack

    model, samples = net_and_samples
    prepared, recipe = quantized(model, samples, pt2e_xnnpack)
    held_out = samples[16:]
    got = pte_outputs(prepared, recipe, samples[0], held_out, tmp_path)
    with torch.no_grad():
        expected = np.concatenate([model(x).numpy() for (x,) in held_out])
    assert snr_db(expected, got) > 33.0


def pte_outputs(prepared, recipe, example, samples, tmp_path) -> np.ndarray:
    """Lower ``prepared`` (one input ``x``, one output) to a .pte and run ``samples`` on ExecuTorch."""
    from edge_export.exporters.executorch import ExecuTorchExporter

    prepared.example_inputs, prepared.input_names, prepared.output_names = example, ("x",), ("logits",)
    exporter = ExecuTorchExporter()
    exporter.lower(prepared, recipe, tmp_path / "model.pte")
    _runtime, run = exporter.load_runtime(tmp_path / "model.pte")
    return np.concatenate([run([x.numpy()])[0] for (x,) in samples])
