"""Shape, slicing and layout ops: reshape, transpose, concat, slice_*, pad, fill, range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .registry import Args, Step, axes_of, bool_of, float_of, int_of, ints, kernel, str_of


@kernel("reshape", "0 copies an input dim, -1 infers")
def _reshape(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    shape = ints(a["shape"], [])
    if len(shape) == x.ndim:
        shape = [d if s == 0 else s for s, d in zip(shape, x.shape)]
    return np.reshape(x, shape)


@kernel("transpose", "perm")
def _transpose(a: Args, step: Step) -> np.ndarray:
    return np.transpose(a["x"], ints(a["perm"], []))


@kernel("concat", "incl. interleave")
def _concat(a: Args, step: Step) -> np.ndarray:
    values = [np.atleast_1d(v) for v in a["values"]]  # MIL concatenates scalars as [1]
    axis = int_of(a, "axis", 0)
    if not bool_of(a, "interleave", False):
        return np.concatenate(values, axis=axis)
    axis %= values[0].ndim
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@kernel("stack", "new axis")
def _stack(a: Args, step: Step) -> np.ndarray:
    return np.stack(a["values"], axis=int_of(a, "axis", 0))


@kernel("split", "num_splits or split_sizes")
def _split(a: Args, step: Step) -> tuple[np.ndarray, ...]:
    x = a["x"]
    axis = int_of(a, "axis", 0)
    sizes = a.get("split_sizes")
    cuts = int(a["num_splits"]) if sizes is None else np.cumsum(ints(sizes, []))[:-1]
    return tuple(np.split(x, cuts, axis=axis))


def _index_tuple(a: Args, shape: Sequence[int]) -> tuple[Any, ...]:
    """Python indices for slice_by_index / slice_update (masks as in MIL)."""
    rank = len(shape)
    begin = ints(a["begin"], [])
    end = ints(a["end"], [])
    stride = ints(a.get("stride"), [1] * rank)
    begin_mask = ints(a.get("begin_mask"), [0] * rank)
    end_mask = ints(a.get("end_mask"), [0] * rank)
    squeeze = ints(a.get("squeeze_mask"), [0] * rank)
    index: list[Any] = []
    for i in range(rank):
        if squeeze[i]:
            index.append(begin[i])
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        index.append(slice(b, e, stride[i]))
    return tuple(index)


@kernel("slice_by_index", "begin/end/stride with begin/end/squeeze masks")
def _slice_by_index(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    return np.asarray(x[_index_tuple(a, x.shape)])


@kernel("slice_update", "functional x[slice] = update")
def _slice_update(a: Args, step: Step) -> np.ndarray:
    y = np.array(a["x"], copy=True)
    index = _index_tuple(a, y.shape)
    y[index] = np.reshape(a["update"], y[index].shape)
    return y


@kernel("slice_by_size", "size -1 runs to the end")
def _slice_by_size(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    begin = ints(a["begin"], [])
    size = ints(a["size"], [])
    index = tuple(
        slice(b % d if d else 0, None if s == -1 else (b % d if d else 0) + s) for b, s, d in zip(begin, size, x.shape)
    )
    return x[index]


@kernel("squeeze", "given axes or all size-1 dims")
def _squeeze(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    axes = axes_of(a, "axes", x.ndim)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=axes)


@kernel("expand_dims", "axes relative to the output rank")
def _expand_dims(a: Args, step: Step) -> np.ndarray:
    return np.expand_dims(a["x"], tuple(ints(a["axes"], [])))


@kernel("flatten2d", "2-D reshape at axis")
def _flatten2d(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    axis = int_of(a, "axis", 1) % (x.ndim + 1) if x.ndim else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@kernel("reverse", "given axes or all")
def _reverse(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    axes = axes_of(a, "axes", x.ndim)
    return np.flip(x, axis=axes)


@kernel("crop", "trim the last two dims")
def _crop(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    top, bottom = ints(a.get("crop_height"), [0, 0])
    left, right = ints(a.get("crop_width"), [0, 0])
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


@kernel("tile", "reps")
def _tile(a: Args, step: Step) -> np.ndarray:
    return np.tile(a["x"], ints(a["reps"], []))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


@kernel("pad", "constant, reflect, replicate on trailing dims")
def _pad(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    p = ints(a["pad"], [])
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = _PAD_MODES[str_of(a, "mode", "constant")]
    if mode == "constant":
        return np.pad(x, widths, constant_values=float_of(a, "constant_val", 0.0))
    return np.pad(x, widths, mode=mode)


@kernel("shape", "int32")
def _shape(a: Args, step: Step) -> np.ndarray:
    return np.asarray(np.shape(a["x"]), dtype=np.int32)


@kernel("fill", "constant tensor of a runtime shape")
def _fill(a: Args, step: Step) -> np.ndarray:
    return np.full(ints(a["shape"], []), a.get("value", 0.0))


@kernel("fill_like", "constant tensor shaped like ref_tensor")
def _fill_like(a: Args, step: Step) -> np.ndarray:
    return np.full(np.shape(a["ref_tensor"]), a.get("value", 0.0))


@kernel("range_1d", "arange(start, end, step)")
def _range_1d(a: Args, step: Step) -> np.ndarray:
    return np.arange(a["start"], a["end"], a["step"])


@kernel("band_part", "keep a band of the last two dims")
def _band_part(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    lower, upper = int_of(a, "lower", -1), int_of(a, "upper", -1)
    m = np.arange(x.shape[-2])[:, None]
    n = np.arange(x.shape[-1])[None, :]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, 0).astype(x.dtype)


@kernel("cumsum", "exclusive / reverse")
def _cumsum(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    axis = int_of(a, "axis", 0)
    rev = bool_of(a, "reverse", False)
    src = np.flip(x, axis) if rev else x
    y = np.cumsum(src, axis=axis)
    if bool_of(a, "exclusive", False):
        y = y - src
    return np.flip(y, axis) if rev else y
