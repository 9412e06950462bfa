"""Gather, scatter, one-hot, sorting and non-zero indexing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .registry import Args, Step, bool_of, int_of, kernel, str_of


@kernel("gather", "axis, batch_dims, negative indices")
def _gather(a: Args, step: Step) -> np.ndarray:
    x, idx = a["x"], np.asarray(a["indices"]).astype(np.int64)
    axis = int_of(a, "axis", 0) % x.ndim
    b = int_of(a, "batch_dims", 0)
    if b == 0:
        return np.take(x, idx, axis=axis)
    batch = x.shape[:b]
    bf = math.prod(batch)
    pre, post = x.shape[b:axis], x.shape[axis + 1 :]
    xt = x.reshape(bf, math.prod(pre), x.shape[axis], math.prod(post))
    it = idx.reshape(bf, -1)
    out = xt[np.arange(bf)[:, None, None], np.arange(xt.shape[1])[None, :, None], it[:, None, :]]
    return out.reshape(*batch, *pre, *idx.shape[b:], *post)


def _along_axis(a: Args, x: np.ndarray) -> tuple[int, np.ndarray]:
    """(axis, indices) of a *_along_axis op, with negative indices counted from the end."""
    axis = int_of(a, "axis", 0) % x.ndim
    idx = np.asarray(a["indices"]).astype(np.int64)
    return axis, np.where(idx < 0, idx + x.shape[axis], idx)


@kernel("gather_along_axis", "take_along_axis, negative indices")
def _gather_along_axis(a: Args, step: Step) -> np.ndarray:
    axis, idx = _along_axis(a, a["x"])
    return np.take_along_axis(a["x"], idx, axis=axis)


@kernel("gather_nd", "batch_dims = 0 only")
def _gather_nd(a: Args, step: Step) -> np.ndarray:
    x, idx = a["x"], np.asarray(a["indices"]).astype(np.int64)
    if int_of(a, "batch_dims", 0) != 0:
        raise NotImplementedError("gather_nd with batch_dims > 0")
    return x[tuple(np.moveaxis(idx, -1, 0))]


_SCATTER_UFUNCS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _scatter_into(data: np.ndarray, index: tuple[Any, ...], updates: np.ndarray, mode: str) -> np.ndarray:
    out = np.array(data, copy=True)
    if mode == "update":
        out[index] = updates
    else:
        _SCATTER_UFUNCS[mode].at(out, index, updates)
    return out


@kernel("scatter", "modes update/add/sub/mul/div/max/min")
def _scatter(a: Args, step: Step) -> np.ndarray:
    data = a["data"]
    axis = int_of(a, "axis", 0) % data.ndim
    idx = np.asarray(a["indices"]).astype(np.int64).reshape(-1)
    moved = np.moveaxis(data, axis, 0)
    upd = np.moveaxis(a["updates"], axis, 0)
    out = _scatter_into(moved, (idx,), upd, str_of(a, "mode", "add"))
    return np.moveaxis(out, 0, axis)


@kernel("scatter_along_axis", "modes update/add/sub/mul/div/max/min")
def _scatter_along_axis(a: Args, step: Step) -> np.ndarray:
    data = a["data"]
    axis, idx = _along_axis(a, data)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    return _scatter_into(data, tuple(grid), a["updates"], str_of(a, "mode", "add"))


@kernel("scatter_nd", "modes update/add/sub/mul/div/max/min")
def _scatter_nd(a: Args, step: Step) -> np.ndarray:
    idx = np.asarray(a["indices"]).astype(np.int64)
    index = tuple(np.moveaxis(idx, -1, 0))
    return _scatter_into(a["data"], index, a["updates"], str_of(a, "mode", "add"))


@kernel("one_hot", "on/off values, axis")
def _one_hot(a: Args, step: Step) -> np.ndarray:
    idx = np.asarray(a["indices"])
    size = int(a["one_hot_vector_size"])
    hot = np.expand_dims(idx, -1) == np.arange(size)
    y = np.where(hot, a.get("on_value", 1), a.get("off_value", 0))
    return np.moveaxis(y, -1, int_of(a, "axis", -1))


@kernel("argsort", "stable")
def _argsort(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    key = x if bool_of(a, "ascending", False) else -x
    return np.argsort(key, axis=int_of(a, "axis", -1), kind="stable")


@kernel("topk", "stable, values and indices")
def _topk(a: Args, step: Step) -> tuple[np.ndarray, np.ndarray]:
    x = a["x"]
    axis = int_of(a, "axis", -1)
    key = x if bool_of(a, "ascending", False) else -x
    idx = np.take(np.argsort(key, axis=axis, kind="stable"), np.arange(int_of(a, "k", 1)), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx


@kernel("non_zero", "indices of non-zeros, [N, rank]")
def _non_zero(a: Args, step: Step) -> np.ndarray:
    return np.argwhere(a["x"])
