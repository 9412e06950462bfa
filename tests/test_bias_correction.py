"""Bias correction (recipe key ``bias_correction``): the mean output shift that int8 weight
rounding causes is measured on calibration data and removed from the layer's bias."""

from __future__ import annotations

import torch
from torch import nn

from edge_export.quant.mechanisms import bias_corrected


class PositiveInputConv(nn.Module):
    """A bias-free conv fed post-ReLU6-like (all positive) inputs: rounding shifts its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, bias=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def rounded(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 in [-127, 127], written out independently."""
    scale = weight.reshape(weight.shape[0], -1).abs().max(dim=1).values / 127
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return (weight / scale.reshape(shape)).round().clamp(-127, 127) * scale.reshape(shape)


def test_bias_correction_removes_the_mean_shift_of_rounding():
    torch.manual_seed(0)
    model = PositiveInputConv().eval()
    with torch.no_grad():
        model.conv.weight.mul_(20)  # BN-folded depthwise weights reach ~17 on EfficientNet-Lite0
    samples = [(torch.rand(1, 4, 10, 10) * 6,) for _ in range(8)]
    corrected = bias_corrected(torch.export.export(model, samples[0]), samples, (-127, 127))
    params = dict(corrected.named_parameters())
    (bias_name,) = [n for n in params if n.endswith("bias_correction")]  # the conv had no bias
    bias = params[bias_name]
    weight = model.conv.weight
    with torch.no_grad():
        float_out = torch.cat([nn.functional.conv2d(x, weight) for (x,) in samples])
        plain = torch.cat([nn.functional.conv2d(x, rounded(weight)) for (x,) in samples])
        fixed = torch.cat([nn.functional.conv2d(x, rounded(weight), bias) for (x,) in samples])
    shift_before = (plain - float_out).mean(dim=(0, 2, 3)).abs()
    shift_after = (fixed - float_out).mean(dim=(0, 2, 3)).abs()
    assert shift_before.max() > 0.05
    assert shift_after.max() < shift_before.max() / 100
    # Weights are untouched: the backend quantizes exactly the weights that were measured.
    assert torch.equal(params["conv.weight"], weight) and torch.equal(params["fc.weight"], model.fc.weight)


def test_filtered_layers_are_left_alone():
    torch.manual_seed(0)
    model = PositiveInputConv().eval()
    samples = [(torch.rand(1, 4, 10, 10),) for _ in range(2)]
    program = torch.export.export(model, samples[0])
    corrected = bias_corrected(program, samples, (-127, 127), quantize_node=lambda node: False)
    assert not [n for n, _ in corrected.named_parameters() if n.endswith("bias_correction")]
    assert torch.equal(dict(corrected.named_parameters())["fc.bias"], model.fc.bias)
