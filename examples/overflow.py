"""A model whose intermediate activations exceed fp16's range (65504) although its
inputs and outputs are small: fine in fp32, inf under fp16 compute. Used to show that
Core ML fp16 overflow is caught on Linux by the MIL reference executor."""

from __future__ import annotations

import torch
from torch import nn


class Overflow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 16)
        self.down = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.up(x) * 1.0e5  # ~1e5: above fp16's maximum of 65504
        return self.down(hidden) * 1.0e-5


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    model = Overflow().eval()
    model.edge_export_metadata = {"name": "overflow", "output_names": ["scores"]}
    return model, (torch.randn(1, 16, generator=torch.Generator().manual_seed(1)),)
