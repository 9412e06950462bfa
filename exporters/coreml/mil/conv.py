"""Convolution, transposed convolution and pooling (1-3 spatial dims, im2col matmuls)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .registry import Args, Step, add_bias, bool_of, int_of, ints, kernel, str_of


def _spatial_pads(
    pad_type: str, pad: Any, in_sizes: Sequence[int], eff_k: Sequence[int], strides: Sequence[int]
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as MIL defines each pad_type."""
    rank = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * rank
    if pad_type == "custom":
        p = ints(pad, [0] * 2 * rank)
        return [(p[2 * i], p[2 * i + 1]) for i in range(rank)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for i, k, s in zip(in_sizes, eff_k, strides):
            total = max(0, s * math.ceil(i / s) - i + k - s)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _pad(x: np.ndarray, pads: Sequence[tuple[int, int]], fill: float = 0.0) -> np.ndarray:
    """``x`` with (before, after) ``pads`` on its spatial dims. ``np.pad`` would cost ~15 us of
    Python per call, as much as a whole small convolution."""
    if not any(b or e for b, e in pads):
        return x
    sizes = x.shape[2:]
    xp = np.full((*x.shape[:2], *(i + b + e for i, (b, e) in zip(sizes, pads))), fill, dtype=x.dtype)
    xp[(slice(None), slice(None), *(slice(b, b + i) for i, (b, _) in zip(sizes, pads)))] = x
    return xp


def _out_sizes(in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> tuple[int, ...]:
    return tuple((i - (k - 1) * d - 1) // s + 1 for i, k, s, d in zip(in_sizes, kernel, strides, dilations))


@functools.lru_cache(maxsize=1024)
def _taps(
    kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...], out: tuple[int, ...]
) -> tuple[tuple[tuple[int, ...], tuple[slice, ...]], ...]:
    """Each kernel tap and the (N, C, *out) slice of the padded input it multiplies (cached:
    a model's convolutions repeat a handful of geometries). Copying the taps' strided slices
    costs a few microseconds each, where a ``sliding_window_view`` costs more than that to
    build before any data moves."""
    return tuple(
        (tap, (slice(None), slice(None),
               *(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dilations, strides, out))))
        for tap in np.ndindex(*kernel))


def _conv_core(
    xp: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    dilations: Sequence[int],
    groups: int,
) -> np.ndarray:
    """Grouped convolution of already padded input as one batched matmul (im2col)."""
    kernel = w.shape[2:]
    n, c = xp.shape[:2]
    if groups == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides):
        # pointwise: already a matmul over channels, no windows to gather
        y = np.matmul(w.reshape(w.shape[0], c), xp.reshape(n, c, -1))
        return y.reshape(n, w.shape[0], *xp.shape[2:])
    out = _out_sizes(xp.shape[2:], kernel, strides, dilations)
    c_out = w.shape[0]
    cg, og = c // groups, c_out // groups
    if (cg == 1 and og == 1 and len(kernel) == 2 and math.prod(out) <= CHANNELS_LAST_MAX_PIXELS
            and all(d == 1 for d in dilations)):
        return _depthwise_channels_last(xp, w, strides, out)
    cols = np.empty((n, c, *kernel, *out), dtype=xp.dtype)
    for tap, window in _taps(kernel, tuple(strides), tuple(dilations), out):
        cols[(slice(None), slice(None), *tap)] = xp[window]
    taps_per_group = cg * math.prod(kernel)
    y = np.matmul(w.reshape(groups, og, taps_per_group), cols.reshape(n, groups, taps_per_group, math.prod(out)))
    return y.reshape(n, c_out, *out)


# Depthwise taps over small feature maps run channels-last: each tap is then one multiply
# over contiguous channels instead of C short rows (EfficientNet-Lite0's 28x28 to 7x7
# blocks: 1.3-2.5x faster per conv than the im2col matmul, which wins over larger maps).
CHANNELS_LAST_MAX_PIXELS = 1024


def _depthwise_channels_last(xp: np.ndarray, w: np.ndarray, strides: Sequence[int],
                             out: tuple[int, ...]) -> np.ndarray:
    xt = np.ascontiguousarray(xp.transpose(0, 2, 3, 1))
    taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))  # (kh, kw, C)
    y = np.zeros((xp.shape[0], *out, xp.shape[1]), dtype=np.result_type(xp, w))
    product = np.empty_like(y)
    for tap, window in _taps(taps.shape[:2], tuple(strides), (1, 1), out):
        np.multiply(xt[(slice(None), *window[2:])], taps[tap], out=product)  # the NCHW window's spatial slices
        y += product
    return y.transpose(0, 3, 1, 2)


@kernel("conv", "1-3D, groups, strides, dilations, pad types (im2col matmul)")
def _conv(a: Args, step: Step) -> np.ndarray:
    x, w = a["x"], np.asarray(a["weight"], dtype=np.float32)
    rank = x.ndim - 2
    strides = ints(a.get("strides"), [1] * rank)
    dilations = ints(a.get("dilations"), [1] * rank)
    eff = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilations)]
    pads = _spatial_pads(str_of(a, "pad_type", "valid"), a.get("pad"), x.shape[2:], eff, strides)
    xp = _pad(x, pads)
    y = _conv_core(xp, w, strides, dilations, int_of(a, "groups", 1))
    return add_bias(y, a.get("bias"), owned=True)


@kernel("conv_transpose", "1-3D, groups, strides, dilations, custom/valid/same pad")
def _conv_transpose(a: Args, step: Step) -> np.ndarray:
    """Transposed conv = zero-insertion, full padding, conv with flipped weights, crop."""
    x, w = a["x"], np.asarray(a["weight"], dtype=np.float32)
    rank = x.ndim - 2
    groups = int_of(a, "groups", 1)
    strides = ints(a.get("strides"), [1] * rank)
    dilations = ints(a.get("dilations"), [1] * rank)
    kernel = w.shape[2:]
    n, c_in = x.shape[:2]
    c_out = w.shape[1] * groups
    up = np.zeros((n, c_in, *[(d - 1) * s + 1 for d, s in zip(x.shape[2:], strides)]), x.dtype)
    up[(slice(None), slice(None), *[slice(None, None, s) for s in strides])] = x
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    xp = _pad(up, [(e - 1, e - 1) for e in eff])
    wc = w.reshape(groups, c_in // groups, c_out // groups, *kernel).swapaxes(1, 2)
    wc = np.flip(wc.reshape(c_out, c_in // groups, *kernel), axis=tuple(range(2, 2 + rank)))
    full = _conv_core(xp, wc, [1] * rank, dilations, groups)
    y = full[(slice(None), slice(None), *_transpose_crop(a, step, x.shape[2:], full.shape[2:]))]
    return add_bias(y, a.get("bias"))


def _transpose_crop(a: Args, step: Step, in_sizes: Sequence[int], full: Sequence[int]) -> list[slice]:
    rank = len(full)
    pad_type = str_of(a, "pad_type", "valid")
    strides = ints(a.get("strides"), [1] * rank)
    if pad_type == "custom":
        p = ints(a.get("pad"), [0] * 2 * rank)
        pads = [(p[2 * i], p[2 * i + 1]) for i in range(rank)]
    elif pad_type == "same":
        totals = [max(f - d * s, 0) for f, d, s in zip(full, in_sizes, strides)]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(0, 0)] * rank
    sizes = [f - b - e for f, (b, e) in zip(full, pads)]
    if a.get("output_shape") is not None:
        sizes = ints(a["output_shape"], [])[2:]
    return [slice(b, b + s) for (b, _), s in zip(pads, sizes)]


def _pool_geometry(
    a: Args, step: Step, x: np.ndarray
) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """Kernel, strides, explicit pads and output sizes (torch-style ceil_mode)."""
    rank = x.ndim - 2
    kernel = ints(a["kernel_sizes"], [])
    strides = ints(a.get("strides"), [1] * rank)
    pads = _spatial_pads(str_of(a, "pad_type", "valid"), a.get("pad"), x.shape[2:], kernel, strides)
    ceil_mode = bool_of(a, "ceil_mode", False)
    out = []
    for i, k, s, (b, e) in zip(x.shape[2:], kernel, strides, pads):
        if ceil_mode:
            o = (i + b + e - k + s - 1) // s + 1
            if (o - 1) * s >= i + b:
                o -= 1
        else:
            o = (i + b + e - k) // s + 1
        out.append(o)
    declared = step.out_shapes[0]
    if declared is not None:
        out = list(declared[2:])
    return kernel, strides, pads, out


def _pool_taps(a: Args, step: Step, x: np.ndarray, fill: float) -> tuple[list[np.ndarray], Any]:
    """The (N, C, *out) slices of the padded input, one per kernel tap, and the geometry."""
    kernel, strides, pads, out = _pool_geometry(a, step, x)
    ext = [(b, max(e, (o - 1) * s + k - i - b)) for i, k, s, (b, e), o in zip(x.shape[2:], kernel, strides, pads, out)]
    xp = _pad(x, ext, fill)
    windows = _taps(tuple(kernel), tuple(strides), (1,) * len(kernel), tuple(out))
    return [xp[window] for _, window in windows], (kernel, strides, pads, out)


def _fold(taps: Sequence[np.ndarray], ufunc: np.ufunc) -> np.ndarray:
    acc = np.array(taps[0])
    for tap in taps[1:]:
        ufunc(acc, tap, out=acc)
    return acc


@kernel("max_pool", "1-3D, pad types, ceil_mode")
def _max_pool(a: Args, step: Step) -> np.ndarray:
    taps, _ = _pool_taps(a, step, a["x"], -np.inf)
    return _fold(taps, np.maximum)


@kernel("l2_pool", "1-3D, pad types")
def _l2_pool(a: Args, step: Step) -> np.ndarray:
    taps, _ = _pool_taps(a, step, a["x"], 0.0)
    return np.sqrt(_fold([t * t for t in taps], np.add))


@kernel("avg_pool", "1-3D, pad types, ceil_mode, exclude_padding_from_average")
def _avg_pool(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    taps, (kernel, strides, pads, out) = _pool_taps(a, step, x, 0.0)
    total = _fold(taps, np.add)
    exclude = bool_of(a, "exclude_padding_from_average", False)
    counts = np.ones((), np.float32)
    for i, k, s, (b, e), o in zip(x.shape[2:], kernel, strides, pads, out):
        lo, hi = (b, b + i) if exclude else (0, b + i + e)
        start = np.arange(o) * s
        n = np.clip(start + k, lo, hi) - np.clip(start, lo, hi)
        counts = np.multiply.outer(counts, n.astype(np.float32))
    return total / counts
