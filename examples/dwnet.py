"""A MobileNet-style depthwise-separable CNN on scikit-learn's digits.

The quantization benchmark's depthwise-heavy model (``bench/quantization.py``): the
8x8 digit is upsampled to 32x32 inside the model, so it takes the same inputs, data
files and preprocessing as ``digits.py``. ``train_dwnet.py`` reproduces ``dwnet_weights.pt``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "dwnet_weights.pt"
# (in channels, out channels, stride) of the depthwise-separable blocks after the stem.
BLOCKS = ((16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1))


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6())


def separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1, each with BN + ReLU6."""
    return nn.Sequential(conv_bn(c_in, c_in, 3, stride, groups=c_in), conv_bn(c_in, c_out, 1, 1))


class DWNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, BLOCKS[0][0], 3, 2)
        self.blocks = nn.Sequential(*(separable(*block) for block in BLOCKS))
        self.classifier = nn.Linear(BLOCKS[-1][1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        x = self.blocks(self.stem(x))
        return self.classifier(x.mean(dim=(2, 3)))


def digits_example():
    """``digits.py`` as a module: its metadata, normalisation and example input are shared
    (loaded by path because edge-export imports model files without their folder on sys.path)."""
    spec = importlib.util.spec_from_file_location("edge_export_example_digits", HERE / "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    digits = digits_example()
    model = DWNet()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    model.edge_export_metadata = {**digits.METADATA, "name": "dwnet"}
    return model.eval(), digits.build()[1]
