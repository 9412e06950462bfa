"""A model whose ios artifact nothing can run on Linux: ``grid_sample`` converts to Core ML's
``resample``, an op the MIL reference executor does not implement, so ios parity is a real
``not-run`` (the exporter's ``load_runtime`` raises RuntimeUnavailable). android and tflite run it."""

from __future__ import annotations

import torch


class Warp(torch.nn.Module):
    """Samples its input at a fixed, learned grid of 3x3 points."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.grid = torch.nn.Parameter(torch.rand(1, 3, 3, 2, generator=generator) * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.grid_sample(x, self.grid, align_corners=False)


def build() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    return Warp().eval(), (torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1)),)
