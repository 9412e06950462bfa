"""Recipe keep-float patterns resolve to the right layers (no toolchain beyond torch.export)."""

from __future__ import annotations

import torch
from torch import nn

from edge_export.quantization import keep_float_filter, weighted_layers


class UpsampleFirst(nn.Module):
    """A top-level interpolate (bilinear) before the first conv: not a weighted layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.stem(x).mean(dim=(2, 3)))


def graph() -> torch.fx.GraphModule:
    return torch.export.export(UpsampleFirst().eval(), (torch.randn(1, 1, 4, 4),)).module()


def test_weighted_layers_skip_root_level_ops():
    assert weighted_layers(graph()) == ["stem", "head"]


def test_first_and_last_keep_only_those_layers_float():
    gm = graph()
    quantize = keep_float_filter(["@first", "@last"], gm)
    decided = {n.name: quantize(n) for n in gm.graph.nodes if n.op == "call_function"}
    assert any(decided.values()), "some nodes must still be quantized"
    for node in gm.graph.nodes:
        if node.op == "call_function" and "conv" in str(node.target):
            assert decided[node.name] is False
        if node.op == "call_function" and "upsample" in str(node.target):
            assert decided[node.name] is True


def test_no_patterns_means_no_filter():
    assert keep_float_filter([], graph()) is None
