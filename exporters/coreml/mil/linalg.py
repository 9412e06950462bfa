"""Linear layers, matmul, einsum and scaled dot-product attention."""

from __future__ import annotations

import math

import numpy as np

from .elementwise import stable_softmax
from .registry import Args, Step, bool_of, kernel


@kernel("linear", "x @ W.T + b")
def _linear(a: Args, step: Step) -> np.ndarray:
    y = a["x"] @ np.asarray(a["weight"]).T
    return y + a["bias"] if a.get("bias") is not None else y


@kernel("matmul", "numpy matmul semantics, transpose_x/y")
def _matmul(a: Args, step: Step) -> np.ndarray:
    x, y = a["x"], a["y"]
    if bool_of(a, "transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if bool_of(a, "transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@kernel("einsum", "numpy einsum")
def _einsum(a: Args, step: Step) -> np.ndarray:
    return np.einsum(str(a["equation"]), *a["values"], optimize=True)


@kernel("scaled_dot_product_attention", "softmax(QK^T/sqrt(E) + mask) V; bool or float mask")
def _sdpa(a: Args, step: Step) -> np.ndarray:
    q, k, v = a["query"], a["key"], a["value"]
    scores = (q @ np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    mask = a.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    return stable_softmax(scores, -1) @ v
