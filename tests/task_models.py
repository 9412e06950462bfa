"""Models that say nothing about themselves (no ``edge_export_metadata``), as a classifier from
a PyPI package arrives: only ``--task`` tells edge-export what their outputs are."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from digits import WEIGHTS, DigitsCNN, normalise  # noqa: E402


def plain_digits() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The bundled digits classifier, trained weights, without its metadata: one rank-2 output
    named ``output`` that nothing in the graph marks as class scores."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval(), (normalise(torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8) % 17),)


class DenseMap(nn.Module):
    """A per-pixel map: its only output is rank 4 at the input's height and width."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def dense_map() -> tuple[nn.Module, tuple[torch.Tensor]]:
    return DenseMap().eval(), (torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)),)
