"""A larger model for the benchmark: a ~22 M-parameter CNN built in code (seeded weights)."""

from __future__ import annotations

import torch
from torch import nn


class WideCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        chans = [3, 64, 128, 256, 512]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:], strict=False):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(512 * 2 * 2 * 4, 2560), nn.ReLU(),
                                  nn.Linear(2560, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    model = WideCNN().eval()
    model.edge_export_metadata = {"output_names": ["logits"]}
    return model, (torch.randn(1, 3, 64, 64),)
