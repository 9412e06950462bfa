"""A tiny CNN with one deliberately quantization-sensitive layer, for keep_float = "auto".

``head`` has one weight per output row 1000x larger than the rest, on an input channel
that is always zero (a ReLU of a constant negative): it contributes nothing in float, but
symmetric per-channel int8 sets each row's scale from it (1000/127), rounding every real
weight of the row to zero. Quantizing ``head`` alone destroys the output; every other
layer quantizes to ~40 dB. Weights are seeded, so the model is deterministic.
"""

from __future__ import annotations

import torch
from torch import nn


class SensitiveNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            self.body.weight[0].zero_()
            self.body.bias[0] = -1.0  # channel 0 after ReLU: always 0
            self.head.weight[:, 0] = 1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.body(torch.relu(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    model = SensitiveNet().eval()
    model.edge_export_metadata = {"name": "sensitive"}
    return model, (torch.randn(1, 3, 8, 8),)


def calibration(path: str, samples: int = 16) -> None:
    """Random calibration inputs (the parity inputs are random too: no labels involved)."""
    import numpy as np

    rng = np.random.default_rng(1)
    np.savez(path, rng.standard_normal((samples, 3, 8, 8)).astype(np.float32))
