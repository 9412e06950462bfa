"""A model file whose import fails: the catalogue expects the failing line in the message."""

import torch
from torch import no_such_name  # noqa: F401  <- import-error


def build():
    return torch.nn.Linear(4, 3), (torch.randn(1, 4),)
