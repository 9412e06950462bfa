"""Reproduce ``digits_weights.pt`` and ``data/digits_*.npz`` (no download: sklearn
ships the dataset). Run: ``python examples/train_digits.py``.

``train`` is shared with ``train_dwnet.py``: same data, split, seed and optimiser."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from digits import HERE, WEIGHTS, DigitsCNN, normalise  # noqa: I001 - run from examples/
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
EPOCHS = 40


def train(make_model: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, float, tuple]:
    """Train on the 75 % split; return the model, its held-out accuracy and the split."""
    torch.manual_seed(SEED)
    digits = load_digits()
    x = normalise(torch.tensor(digits.images, dtype=torch.float32)).unsqueeze(1)
    y = torch.tensor(digits.target)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED,
                                              stratify=y)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(SEED)
    for _epoch in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    return model, acc, (x_tr, x_te, y_tr, y_te)


def main() -> None:
    model, acc, (x_tr, x_te, _y_tr, y_te) = train(DigitsCNN)
    print(f"test accuracy: {acc:.4f} on {len(y_te)} held-out digits")
    torch.save(model.state_dict(), WEIGHTS)
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    # Calibration from the training split, evaluation/validation from the held-out split.
    np.savez_compressed(data / "digits_calib.npz", x=x_tr[:256].numpy())
    np.savez_compressed(data / "digits_eval.npz", x=x_te.numpy(), labels=y_te.numpy())
    np.savez_compressed(data / "digits_val.npz", x=x_te[:32].numpy())


if __name__ == "__main__":
    main()
