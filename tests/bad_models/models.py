"""Small models that are wrong in one way each, for the bad-input catalogue.

Lines the catalogue expects an error message to point at carry a ``# <- name`` marker.
"""

from __future__ import annotations

import torch
from torch import nn

CONFIG = {"layers": 2}  # an attribute that is neither an nn.Module nor a builder


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def example() -> tuple[torch.Tensor]:
    return (torch.randn(1, 4, generator=torch.Generator().manual_seed(1)),)


def build():
    return Tiny(), example()


def no_examples():
    return Tiny()


def returns_string():
    return "model.bin"


def bad_examples():
    return Tiny(), [1.0, 2.0]


def raises():
    raise RuntimeError("checkpoint weights.bin not found")  # <- raises


def float64():
    return Tiny().double(), (example()[0].double(),)


class NaNOut(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * torch.tensor(float("nan"))


class InfOut(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.fc(x) * 0.0)


def nan():
    return NaNOut(), example()


def inf():
    return InfOut(), example()


class DataDependent(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # <- data-dependent
            return self.fc(x)
        return -self.fc(x)


def data_dependent():
    return DataDependent(), example()


class RoundDecimals(Tiny):
    """aten.round.decimals: LiteRT lowers it; ExecuTorch's edge dialect refuses it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.fc(x), decimals=2)


def round_decimals():
    return RoundDecimals(), example()


class ReturnsCount(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict:
        return {"scores": self.fc(x), "count": 3}


def returns_count():
    return ReturnsCount(), example()
