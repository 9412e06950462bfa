"""Reproduce ``dwnet_weights.pt`` (same data, split, seed and optimiser as
``train_digits.py``; the data files in ``data/`` are that script's). Run:
``python examples/train_dwnet.py``."""

from __future__ import annotations

import torch
from dwnet import WEIGHTS, DWNet, digits_example  # noqa: I001 - run from examples/
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
EPOCHS = 40


def main() -> None:
    torch.manual_seed(SEED)
    digits = load_digits()
    x = digits_example().normalise(torch.tensor(digits.images, dtype=torch.float32)).unsqueeze(1)
    y = torch.tensor(digits.target)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED,
                                              stratify=y)
    model = DWNet()
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
    params = sum(p.numel() for p in model.parameters())
    print(f"test accuracy: {acc:.4f} on {len(y_te)} held-out digits ({params} parameters)")
    torch.save(model.state_dict(), WEIGHTS)


if __name__ == "__main__":
    main()
