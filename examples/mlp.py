"""A weight-heavy model (2.1 M parameters, almost all in Linear weights), so artifact
size ratios of quantized recipes are measured where weights dominate."""

from __future__ import annotations

import torch
from torch import nn


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 10)).eval()
    model.edge_export_metadata = {"name": "mlp", "output_names": ["logits"], "input_names": ["features"]}
    return model, (torch.randn(1, 1024, generator=torch.Generator().manual_seed(1)),)
