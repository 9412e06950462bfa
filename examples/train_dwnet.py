"""Reproduce ``dwnet_weights.pt`` with ``train_digits.train`` (same data, split, seed and
optimiser; the data files in ``data/`` are that script's). Run:
``python examples/train_dwnet.py``."""

from __future__ import annotations

import torch
from dwnet import WEIGHTS, DWNet  # noqa: I001 - run from examples/
from train_digits import train


def main() -> None:
    model, acc, (_x_tr, _x_te, _y_tr, y_te) = train(DWNet)
    params = sum(p.numel() for p in model.parameters())
    print(f"test accuracy: {acc:.4f} on {len(y_te)} held-out digits ({params} parameters)")
    torch.save(model.state_dict(), WEIGHTS)


if __name__ == "__main__":
    main()
