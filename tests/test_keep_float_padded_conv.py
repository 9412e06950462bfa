"""android int8-static with a kept-float conv whose zero padding is a separate op
(EfficientNet's ``Conv2dStaticSamePadding``): XNNPACK's pad pass must not make the float
conv read a quantized input (lowering failed with "Weight and Input should both be quantized")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_quantization_relu6 import pte_outputs, snr_db


class StaticSamePaddingConv(nn.Conv2d):
    """A conv whose padding is an explicit ``ZeroPad2d`` inside the same module."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, groups=channels, bias=False)
        self.static_padding = nn.ZeroPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


class PaddedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6())
        self.padded = StaticSamePaddingConv(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.padded(self.stem(x)))).flatten(1)


def first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@pytest.mark.slow
def test_kept_float_conv_after_a_quantized_pad_input_lowers(tmp_path):
    from edge_export.exporters.executorch.schemes import pt2e_xnnpack

    from edge_export.build.exporter import BuildContext
    from edge_export.quant.mechanisms import with_keep_float
    from edge_export.quant.recipe import builtin_recipes

    torch.manual_seed(0)
    model = PaddedNet().eval()
    samples = [(torch.randn(1, 3, 8, 8),) for _ in range(20)]
    recipe = with_keep_float(builtin_recipes("android")["int8-static"], ["padded"])
    context = BuildContext(calibration=samples[:12], reload_module=lambda: model, example_inputs=samples[0],
                           input_names=["x"], output_names=["logits"])
    prepared = pt2e_xnnpack(torch.export.export(model, samples[0]), recipe, context)
    convs = [n for n in prepared.program.graph.nodes if "conv2d" in str(n.target)]
    kept = [n for n in convs if "dequantize" not in str(n.args[1].target)]
    assert len(kept) == 1, "exactly the padded conv keeps float weights"

    held_out = samples[12:]
    got = pte_outputs(prepared, recipe, samples[0], held_out, tmp_path)
    with torch.no_grad():
        reference = np.concatenate([first(prepared.reference(x)).numpy() for (x,) in held_out])
        expected = np.concatenate([model(x).numpy() for (x,) in held_out])
    assert snr_db(reference, got) > 35.0, "the .pte computes what the quantized reference computes"
    assert snr_db(expected, got) > 25.0
