"""The bundled example: a small CNN trained on scikit-learn's handwritten digits.

8x8 grayscale images, ten classes. ``train_digits.py`` reproduces the weights in
``digits_weights.pt`` and the data files in ``data/``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "digits_weights.pt"
# Training data is sklearn's pixels (0..16, ink high) scaled to 0..1, normalised with
# the training split's mean/std. An app maps a 0..255 drawing (dark ink on white, inverted)
# the same way: x = ((255 - pixel) * scale - mean) / std.
MEAN, STD = 0.3052, 0.3760
METADATA = {
    "name": "digits",
    "labels": [str(d) for d in range(10)],
    "output_names": ["logits"],
    "preprocessing": {"layout": "NCHW", "colour": "grayscale", "image_size": [8, 8],
                      "scale": 1 / 255, "mean": [MEAN], "std": [STD], "invert": True},
}


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                                        nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def normalise(pixels16: torch.Tensor) -> torch.Tensor:
    """sklearn digits pixels (0..16) → model input."""
    return (pixels16 / 16.0 - MEAN) / STD


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    model = DigitsCNN()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    model.edge_export_metadata = METADATA
    # A real digit (sample 3 of the dataset, a "3") as the example input.
    example = normalise(torch.tensor(_EXAMPLE_PIXELS, dtype=torch.float32).reshape(1, 1, 8, 8))
    return model.eval(), (example,)


_EXAMPLE_PIXELS = [
    0, 0, 7, 15, 13, 1, 0, 0, 0, 8, 13, 6, 15, 4, 0, 0, 0, 2, 1, 13, 13, 0, 0, 0,
    0, 0, 2, 15, 11, 1, 0, 0, 0, 0, 0, 1, 12, 12, 1, 0, 0, 0, 0, 0, 1, 10, 8, 0,
    0, 0, 8, 4, 5, 14, 9, 0, 0, 0, 7, 13, 13, 9, 0, 0,
]
