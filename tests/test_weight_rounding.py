"""GPTQ weight rounding (recipe key ``weight_rounding = "gptq"``): the chosen codes reach the
backend as float weights on its grid, and they lower the layer's output error on real inputs
compared with round-to-nearest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_export.quant.rounding import gptq_rounded_weights


class Net(nn.Module):
    """A regular conv, a depthwise conv (one 3x3 filter per channel) and a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, groups=8, stride=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dw(torch.relu(self.conv(x))).mean(dim=(2, 3)))


def _inputs(n: int) -> list[tuple[torch.Tensor]]:
    base = torch.rand(4, 1, 1)  # correlated inputs: where error feedback beats rounding alone
    return [(base * 6 + torch.rand(1, 4, 12, 12),) for _ in range(n)]


def rtn(weight: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Symmetric per-output-channel rounding to nearest, written out independently."""
    shape = (-1,) + (1,) * (weight.dim() - 1)
    scale = (weight.reshape(weight.shape[0], -1).abs().max(dim=1).values / ((qmax - qmin) / 2)).reshape(shape)
    return (weight / scale).round().clamp(qmin, qmax) * scale


@pytest.mark.parametrize("quant_range", [(-127, 127), (-128, 127)])  # XNNPACK/AEQ, Core ML
def test_gptq_weights_survive_the_backends_rounding_and_beat_nearest(quant_range):
    torch.manual_seed(0)
    model = Net().eval()
    calibration, held_out = _inputs(16), _inputs(8)
    graph_module = torch.export.export(model, calibration[0]).module()
    rounded = gptq_rounded_weights(graph_module, calibration, quant_range)
    # fc sees 16 input vectors for 8 columns: too few to fit error feedback, left to the backend.
    assert sorted(rounded) == ["conv.weight", "dw.weight"]
    for name, weight in rounded.items():
        original = dict(model.named_parameters())[name].detach()
        rows = weight.reshape(weight.shape[0], -1)
        # Same per-row max |w|, so the backend derives the same scale ...
        assert torch.equal(rows.abs().amax(1), original.reshape(original.shape[0], -1).abs().amax(1))
        # ... and its rounding to nearest leaves every weight where it is, except each row's
        # max-|w| weight on Core ML's asymmetric range (it lands on +127 or -128 steps).
        moved = (rtn(weight, *quant_range) - weight).reshape(rows.shape).abs() > 1e-5 * rows.abs().amax(1, keepdim=True)
        assert moved.sum(1).max() <= (1 if quant_range[0] == -128 else 0)
        # The codes are not simply round-to-nearest of the original weights.
        assert not torch.allclose(rtn(weight, *quant_range), rtn(original, *quant_range))
    # Output error of the first conv on held-out inputs: GPTQ's codes vs nearest.
    x = torch.cat([s for (s,) in held_out])
    w = model.conv.weight.detach()
    exact = nn.functional.conv2d(x, w, padding=1)
    err_rtn = (nn.functional.conv2d(x, rtn(w, *quant_range), padding=1) - exact).pow(2).mean()
    err_gptq = (nn.functional.conv2d(x, rtn(rounded["conv.weight"], *quant_range), padding=1) - exact).pow(2).mean()
    assert err_gptq < 0.8 * err_rtn
