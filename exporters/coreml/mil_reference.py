"""Reference executor for Core ML ML Program (.mlpackage) models, in numpy.

Core ML prediction is only available on macOS, so parity of a converted model
cannot be checked on Linux with coremltools alone. This module reads the MIL
program back out of a saved ``.mlpackage`` (via coremltools' milproto loader)
and evaluates its ``main`` function op by op with numpy kernels.

Precision emulation: every kernel computes in float32, then its result is cast
to the dtype the MIL program declares for that output. Float16 values are kept
as float32 arrays holding exactly-representable float16 values, so fp16
rounding, overflow to ``inf`` and precision loss happen where they would on a
device (accumulation inside a kernel is still fp32, which is kinder than some
devices).

Ops without a kernel are never guessed: :meth:`Program.run` raises
:class:`UnsupportedOps` naming all of them before anything is executed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "SUPPORTED_OPS",
    "Program",
    "UnsupportedOps",
    "load",
    "supported_op_table",
]

Args = dict[str, Any]


class UnsupportedOps(Exception):
    """The program uses MIL ops this executor has no kernel for."""

    def __init__(self, ops: Sequence[str]) -> None:
        self.ops: tuple[str, ...] = tuple(sorted(set(ops)))
        super().__init__("unsupported MIL ops: " + ", ".join(self.ops))


# --------------------------------------------------------------------------
# coremltools access (lazy: importing it costs seconds and pulls in torch)
# --------------------------------------------------------------------------

_NOISY_LOGGERS = ("coremltools", "torchao", "torch.utils._pytree")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide coremltools' version/proxy warnings; errors still propagate."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _coremltools() -> Any:
    with _quiet():
        import coremltools

    return coremltools


# --------------------------------------------------------------------------
# small argument helpers
# --------------------------------------------------------------------------


def _ints(value: Any, default: Sequence[int]) -> list[int]:
    if value is None:
        return list(default)
    return [int(v) for v in np.ravel(value)]


def _int(a: Args, key: str, default: int) -> int:
    return int(a[key]) if a.get(key) is not None else default


def _float(a: Args, key: str, default: float) -> float:
    return float(a[key]) if a.get(key) is not None else default


def _bool(a: Args, key: str, default: bool) -> bool:
    return bool(a[key]) if a.get(key) is not None else default


def _str(a: Args, key: str, default: str) -> str:
    return str(a[key]) if a.get(key) is not None else default


def _axes(a: Args, key: str, ndim: int) -> tuple[int, ...] | None:
    """Normalised axes, or None meaning 'all axes'."""
    if a.get(key) is None:
        return None
    return tuple(sorted(int(v) % ndim for v in np.ravel(a[key])))


def _per_channel(v: np.ndarray, ndim: int, axis: int = 1) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis``."""
    v = np.asarray(v)
    if v.ndim != 1:
        return v
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


@dataclass(frozen=True)
class _Step:
    """One non-constant op, resolved once at load time."""

    op_type: str
    name: str
    kernel: Callable[[Args, _Step], Any]
    args: tuple[tuple[str, str | tuple[str, ...]], ...]
    out_names: tuple[str, ...]
    out_dtypes: tuple[np.dtype | None, ...]
    out_shapes: tuple[tuple[int, ...] | None, ...]


# --------------------------------------------------------------------------
# elementwise kernels
# --------------------------------------------------------------------------


# Numerical Recipes erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z/2); P's coefficients, highest power first.
_ERFC_COEFFS = (
    0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807,
    -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223,
)  # fmt: skip


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 absolute (Taylor near 0, Numerical Recipes erfc outside)."""
    x64 = np.asarray(x, dtype=np.float64)
    z = np.abs(x64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.polyval(_ERFC_COEFFS, t)
    tail = np.sign(x64) * (1.0 - t * np.exp(-z * z + poly))
    x2 = x64 * x64
    term = x64.copy()
    series = x64.copy()
    for n in range(1, 12):
        term = term * (-x2) / n
        series = series + term / (2 * n + 1)
    series = series * (2.0 / math.sqrt(math.pi))
    return np.where(z < 0.5, series, tail).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Args, _Step], np.ndarray]:
    def kernel(a: Args, step: _Step) -> np.ndarray:
        return fn(a["x"])

    return kernel


def _binary(fn: Callable[[Any, Any], np.ndarray]) -> Callable[[Args, _Step], np.ndarray]:
    def kernel(a: Args, step: _Step) -> np.ndarray:
        return fn(a["x"], a["y"])

    return kernel


def _with_epsilon(fn: Callable[[np.ndarray, float], np.ndarray], eps: float) -> Callable:
    def kernel(a: Args, step: _Step) -> np.ndarray:
        return fn(a["x"], _float(a, "epsilon", eps))

    return kernel


def _floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.floor_divide(x, y)


def _identity(a: Args, step: _Step) -> np.ndarray:
    return a["x"]


def _cast(a: Args, step: _Step) -> np.ndarray:
    # The executor casts every output to its declared dtype; that *is* the op.
    return a["x"]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def _silu(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _softsign(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.abs(x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(np.float32(0.0), x)


def _gelu(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    mode = _str(a, "mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        k = np.float32(math.sqrt(2.0 / math.pi))
        return 0.5 * x * (1.0 + np.tanh(k * (x + np.float32(0.044715) * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


def _leaky_relu(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    return np.where(x >= 0, x, x * _float(a, "alpha", 0.01))


def _elu(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    return np.where(x > 0, x, _float(a, "alpha", 1.0) * np.expm1(np.minimum(x, 0)))


def _clip(a: Args, step: _Step) -> np.ndarray:
    return np.minimum(np.maximum(a["x"], a["alpha"]), a["beta"])


def _threshold(a: Args, step: _Step) -> np.ndarray:
    return np.maximum(a["x"], a["alpha"])


def _thresholded_relu(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    return np.where(x > _float(a, "alpha", 1.0), x, 0).astype(x.dtype)


def _clamped_relu(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    y = np.where(x >= 0, x, x * _float(a, "alpha", 0.0))
    return np.minimum(y, _float(a, "beta", 6.0))


def _prelu(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    alpha = _per_channel(a["alpha"], x.ndim)
    return np.where(x >= 0, x, x * alpha)


def _sigmoid_hard(a: Args, step: _Step) -> np.ndarray:
    y = _float(a, "alpha", 0.2) * a["x"] + _float(a, "beta", 0.5)
    return np.clip(y, 0.0, 1.0)


def _scaled_tanh(a: Args, step: _Step) -> np.ndarray:
    return _float(a, "alpha", 1.0) * np.tanh(_float(a, "beta", 1.0) * a["x"])


def _linear_activation(a: Args, step: _Step) -> np.ndarray:
    return _float(a, "alpha", 1.0) * a["x"] + _float(a, "beta", 0.0)


def _softplus_parametric(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    alpha = _per_channel(a["alpha"], x.ndim)
    beta = _per_channel(a["beta"], x.ndim)
    return alpha * np.logaddexp(np.float32(0.0), beta * x)


def _softmax_np(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _softmax(a: Args, step: _Step) -> np.ndarray:
    return _softmax_np(a["x"], _int(a, "axis", -1))


def _select(a: Args, step: _Step) -> np.ndarray:
    return np.where(a["cond"], a["a"], a["b"])


# --------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[[Args, _Step], np.ndarray]:
    def kernel(a: Args, step: _Step) -> np.ndarray:
        x = a["x"]
        return fn(x, axis=_axes(a, "axes", x.ndim), keepdims=_bool(a, "keep_dims", False))

    return kernel


def _l1(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    return np.sum(np.abs(x), axis=axis, keepdims=keepdims)


def _l2(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))


def _log_sum(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    return np.log(np.sum(x, axis=axis, keepdims=keepdims))


def _log_sum_exp(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


def _sum_square(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    return np.sum(x * x, axis=axis, keepdims=keepdims)


def _reduce_arg(fn: Callable[..., np.ndarray]) -> Callable[[Args, _Step], np.ndarray]:
    def kernel(a: Args, step: _Step) -> np.ndarray:
        axis = _int(a, "axis", -1)
        return fn(a["x"], axis=axis, keepdims=_bool(a, "keep_dims", False))

    return kernel


# --------------------------------------------------------------------------
# linear algebra
# --------------------------------------------------------------------------


def _linear(a: Args, step: _Step) -> np.ndarray:
    y = a["x"] @ np.asarray(a["weight"]).T
    return y + a["bias"] if a.get("bias") is not None else y


def _matmul(a: Args, step: _Step) -> np.ndarray:
    x, y = a["x"], a["y"]
    if _bool(a, "transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if _bool(a, "transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _einsum(a: Args, step: _Step) -> np.ndarray:
    return np.einsum(str(a["equation"]), *a["values"], optimize=True)


def _sdpa(a: Args, step: _Step) -> np.ndarray:
    q, k, v = a["query"], a["key"], a["value"]
    scores = (q @ np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    mask = a.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    return _softmax_np(scores, -1) @ v


# --------------------------------------------------------------------------
# convolution and pooling
# --------------------------------------------------------------------------


def _spatial_pads(
    pad_type: str, pad: Any, in_sizes: Sequence[int], eff_k: Sequence[int], strides: Sequence[int]
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as MIL defines each pad_type."""
    rank = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * rank
    if pad_type == "custom":
        p = _ints(pad, [0] * 2 * rank)
        return [(p[2 * i], p[2 * i + 1]) for i in range(rank)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for i, k, s in zip(in_sizes, eff_k, strides):
            total = max(0, s * math.ceil(i / s) - i + k - s)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _windows(xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> np.ndarray:
    """View (N, C, *out, *kernel) of the strided, dilated windows of padded ``xp``."""
    rank = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + rank)))
    index = (slice(None), slice(None))
    index += tuple(slice(None, None, s) for s in strides)
    index += tuple(slice(None, None, d) for d in dilations)
    return win[index]


def _conv_core(
    xp: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    dilations: Sequence[int],
    groups: int,
) -> np.ndarray:
    """Grouped convolution of already padded input as one batched matmul (im2col)."""
    rank = w.ndim - 2
    kernel = w.shape[2:]
    win = _windows(xp, kernel, strides, dilations)
    n, c = xp.shape[:2]
    out = win.shape[2 : 2 + rank]
    c_out = w.shape[0]
    cg, og = c // groups, c_out // groups
    win = win.reshape(n, groups, cg, *out, *kernel)
    perm = (0, 1, *range(3, 3 + rank), 2, *range(3 + rank, 3 + 2 * rank))
    cols = win.transpose(perm).reshape(n, groups, math.prod(out), cg * math.prod(kernel))
    wm = w.reshape(groups, og, cg * math.prod(kernel)).transpose(0, 2, 1)
    y = np.matmul(cols, wm)  # (N, G, P, Og)
    return y.transpose(0, 1, 3, 2).reshape(n, c_out, *out)


def _add_bias(y: np.ndarray, bias: Any) -> np.ndarray:
    return y if bias is None else y + _per_channel(bias, y.ndim)


def _conv(a: Args, step: _Step) -> np.ndarray:
    x, w = a["x"], np.asarray(a["weight"], dtype=np.float32)
    rank = x.ndim - 2
    strides = _ints(a.get("strides"), [1] * rank)
    dilations = _ints(a.get("dilations"), [1] * rank)
    eff = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilations)]
    pads = _spatial_pads(_str(a, "pad_type", "valid"), a.get("pad"), x.shape[2:], eff, strides)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    y = _conv_core(xp, w, strides, dilations, _int(a, "groups", 1))
    return _add_bias(y, a.get("bias"))


def _conv_transpose(a: Args, step: _Step) -> np.ndarray:
    """Transposed conv = zero-insertion, full padding, conv with flipped weights, crop."""
    x, w = a["x"], np.asarray(a["weight"], dtype=np.float32)
    rank = x.ndim - 2
    groups = _int(a, "groups", 1)
    strides = _ints(a.get("strides"), [1] * rank)
    dilations = _ints(a.get("dilations"), [1] * rank)
    kernel = w.shape[2:]
    n, c_in = x.shape[:2]
    c_out = w.shape[1] * groups
    up = np.zeros((n, c_in, *[(d - 1) * s + 1 for d, s in zip(x.shape[2:], strides)]), x.dtype)
    up[(slice(None), slice(None), *[slice(None, None, s) for s in strides])] = x
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    xp = np.pad(up, [(0, 0), (0, 0), *[(e - 1, e - 1) for e in eff]])
    wc = w.reshape(groups, c_in // groups, c_out // groups, *kernel).swapaxes(1, 2)
    wc = np.flip(wc.reshape(c_out, c_in // groups, *kernel), axis=tuple(range(2, 2 + rank)))
    full = _conv_core(xp, wc, [1] * rank, dilations, groups)
    y = full[(slice(None), slice(None), *_transpose_crop(a, step, x.shape[2:], full.shape[2:]))]
    return _add_bias(y, a.get("bias"))


def _transpose_crop(a: Args, step: _Step, in_sizes: Sequence[int], full: Sequence[int]) -> list[slice]:
    rank = len(full)
    pad_type = _str(a, "pad_type", "valid")
    strides = _ints(a.get("strides"), [1] * rank)
    if pad_type == "custom":
        p = _ints(a.get("pad"), [0] * 2 * rank)
        pads = [(p[2 * i], p[2 * i + 1]) for i in range(rank)]
    elif pad_type == "same":
        totals = [max(f - d * s, 0) for f, d, s in zip(full, in_sizes, strides)]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(0, 0)] * rank
    sizes = [f - b - e for f, (b, e) in zip(full, pads)]
    if a.get("output_shape") is not None:
        sizes = _ints(a["output_shape"], [])[2:]
    return [slice(b, b + s) for (b, _), s in zip(pads, sizes)]


def _pool_geometry(
    a: Args, step: _Step, x: np.ndarray
) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """Kernel, strides, explicit pads and output sizes (torch-style ceil_mode)."""
    rank = x.ndim - 2
    kernel = _ints(a["kernel_sizes"], [])
    strides = _ints(a.get("strides"), [1] * rank)
    pads = _spatial_pads(_str(a, "pad_type", "valid"), a.get("pad"), x.shape[2:], kernel, strides)
    ceil_mode = _bool(a, "ceil_mode", False)
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


def _pool_windows(a: Args, step: _Step, x: np.ndarray, fill: float) -> tuple[np.ndarray, Any]:
    kernel, strides, pads, out = _pool_geometry(a, step, x)
    ext = [(b, max(e, (o - 1) * s + k - i - b)) for i, k, s, (b, e), o in zip(x.shape[2:], kernel, strides, pads, out)]
    xp = np.pad(x, [(0, 0), (0, 0), *ext], constant_values=fill)
    win = _windows(xp, kernel, strides, [1] * len(kernel))
    win = win[(slice(None), slice(None), *[slice(0, o) for o in out])]
    return win, (kernel, strides, pads, out)


def _max_pool(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    win, _ = _pool_windows(a, step, x, -np.inf)
    return win.max(axis=tuple(range(x.ndim, 2 * x.ndim - 2)))


def _l2_pool(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    win, _ = _pool_windows(a, step, x, 0.0)
    return np.sqrt(np.sum(win * win, axis=tuple(range(x.ndim, 2 * x.ndim - 2))))


def _avg_pool(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    win, (kernel, strides, pads, out) = _pool_windows(a, step, x, 0.0)
    total = win.sum(axis=tuple(range(x.ndim, 2 * x.ndim - 2)))
    exclude = _bool(a, "exclude_padding_from_average", False)
    counts = np.ones((), np.float32)
    for i, k, s, (b, e), o in zip(x.shape[2:], kernel, strides, pads, out):
        lo, hi = (b, b + i) if exclude else (0, b + i + e)
        start = np.arange(o) * s
        n = np.clip(start + k, lo, hi) - np.clip(start, lo, hi)
        counts = np.multiply.outer(counts, n.astype(np.float32))
    return total / counts


# --------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------


def _batch_norm(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    mean = _per_channel(a["mean"], x.ndim)
    inv = 1.0 / np.sqrt(_per_channel(a["variance"], x.ndim) + _float(a, "epsilon", 1e-5))
    y = (x - mean) * inv
    if a.get("gamma") is not None:
        y = y * _per_channel(a["gamma"], x.ndim)
    return _add_bias(y, a.get("beta"))


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _instance_norm(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    y = _normalise(x, tuple(range(2, x.ndim)), _float(a, "epsilon", 1e-5))
    if a.get("gamma") is not None:
        y = y * _per_channel(a["gamma"], x.ndim)
    return _add_bias(y, a.get("beta"))


def _layer_norm(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axes = _axes(a, "axes", x.ndim) or tuple(range(x.ndim))
    y = _normalise(x, axes, _float(a, "epsilon", 1e-5))
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if a.get("gamma") is not None:
        y = y * np.reshape(a["gamma"], shape)
    if a.get("beta") is not None:
        y = y + np.reshape(a["beta"], shape)
    return y


def _l2_norm(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axes = tuple(range(x.ndim - 3, x.ndim))
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + _float(a, "epsilon", 1e-6))
    return x / norm


# --------------------------------------------------------------------------
# shape / indexing ops
# --------------------------------------------------------------------------


def _reshape(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    shape = _ints(a["shape"], [])
    if len(shape) == x.ndim:
        shape = [d if s == 0 else s for s, d in zip(shape, x.shape)]
    return np.reshape(x, shape)


def _transpose(a: Args, step: _Step) -> np.ndarray:
    return np.transpose(a["x"], _ints(a["perm"], []))


def _concat(a: Args, step: _Step) -> np.ndarray:
    values = [np.atleast_1d(v) for v in a["values"]]  # MIL concatenates scalars as [1]
    axis = _int(a, "axis", 0)
    if not _bool(a, "interleave", False):
        return np.concatenate(values, axis=axis)
    axis %= values[0].ndim
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def _stack(a: Args, step: _Step) -> np.ndarray:
    return np.stack(a["values"], axis=_int(a, "axis", 0))


def _split(a: Args, step: _Step) -> tuple[np.ndarray, ...]:
    x = a["x"]
    axis = _int(a, "axis", 0)
    sizes = a.get("split_sizes")
    cuts = int(a["num_splits"]) if sizes is None else np.cumsum(_ints(sizes, []))[:-1]
    return tuple(np.split(x, cuts, axis=axis))


def _index_tuple(a: Args, shape: Sequence[int]) -> tuple[Any, ...]:
    """Python indices for slice_by_index / slice_update (masks as in MIL)."""
    rank = len(shape)
    begin = _ints(a["begin"], [])
    end = _ints(a["end"], [])
    stride = _ints(a.get("stride"), [1] * rank)
    begin_mask = _ints(a.get("begin_mask"), [0] * rank)
    end_mask = _ints(a.get("end_mask"), [0] * rank)
    squeeze = _ints(a.get("squeeze_mask"), [0] * rank)
    index: list[Any] = []
    for i in range(rank):
        if squeeze[i]:
            index.append(begin[i])
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        index.append(slice(b, e, stride[i]))
    return tuple(index)


def _slice_by_index(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    return np.asarray(x[_index_tuple(a, x.shape)])


def _slice_update(a: Args, step: _Step) -> np.ndarray:
    y = np.array(a["x"], copy=True)
    index = _index_tuple(a, y.shape)
    y[index] = np.reshape(a["update"], y[index].shape)
    return y


def _slice_by_size(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    begin = _ints(a["begin"], [])
    size = _ints(a["size"], [])
    index = tuple(
        slice(b % d if d else 0, None if s == -1 else (b % d if d else 0) + s) for b, s, d in zip(begin, size, x.shape)
    )
    return x[index]


def _squeeze(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axes = _axes(a, "axes", x.ndim)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=axes)


def _expand_dims(a: Args, step: _Step) -> np.ndarray:
    return np.expand_dims(a["x"], tuple(_ints(a["axes"], [])))


def _flatten2d(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axis = _int(a, "axis", 1) % (x.ndim + 1) if x.ndim else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _reverse(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axes = _axes(a, "axes", x.ndim)
    return np.flip(x, axis=axes)


def _crop(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    top, bottom = _ints(a.get("crop_height"), [0, 0])
    left, right = _ints(a.get("crop_width"), [0, 0])
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def _tile(a: Args, step: _Step) -> np.ndarray:
    return np.tile(a["x"], _ints(a["reps"], []))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _pad(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    p = _ints(a["pad"], [])
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = _PAD_MODES[_str(a, "mode", "constant")]
    if mode == "constant":
        return np.pad(x, widths, constant_values=_float(a, "constant_val", 0.0))
    return np.pad(x, widths, mode=mode)


def _shape(a: Args, step: _Step) -> np.ndarray:
    return np.asarray(np.shape(a["x"]), dtype=np.int32)


def _fill(a: Args, step: _Step) -> np.ndarray:
    return np.full(_ints(a["shape"], []), a.get("value", 0.0))


def _fill_like(a: Args, step: _Step) -> np.ndarray:
    return np.full(np.shape(a["ref_tensor"]), a.get("value", 0.0))


def _range_1d(a: Args, step: _Step) -> np.ndarray:
    return np.arange(a["start"], a["end"], a["step"])


def _band_part(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    lower, upper = _int(a, "lower", -1), _int(a, "upper", -1)
    m = np.arange(x.shape[-2])[:, None]
    n = np.arange(x.shape[-1])[None, :]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, 0).astype(x.dtype)


def _cumsum(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axis = _int(a, "axis", 0)
    rev = _bool(a, "reverse", False)
    src = np.flip(x, axis) if rev else x
    y = np.cumsum(src, axis=axis)
    if _bool(a, "exclusive", False):
        y = y - src
    return np.flip(y, axis) if rev else y


def _gather(a: Args, step: _Step) -> np.ndarray:
    x, idx = a["x"], np.asarray(a["indices"]).astype(np.int64)
    axis = _int(a, "axis", 0) % x.ndim
    b = _int(a, "batch_dims", 0)
    if b == 0:
        return np.take(x, idx, axis=axis)
    batch = x.shape[:b]
    bf = math.prod(batch)
    pre, post = x.shape[b:axis], x.shape[axis + 1 :]
    xt = x.reshape(bf, math.prod(pre), x.shape[axis], math.prod(post))
    it = idx.reshape(bf, -1)
    out = xt[np.arange(bf)[:, None, None], np.arange(xt.shape[1])[None, :, None], it[:, None, :]]
    return out.reshape(*batch, *pre, *idx.shape[b:], *post)


def _gather_along_axis(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    axis = _int(a, "axis", 0) % x.ndim
    idx = np.asarray(a["indices"]).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take_along_axis(x, idx, axis=axis)


def _gather_nd(a: Args, step: _Step) -> np.ndarray:
    x, idx = a["x"], np.asarray(a["indices"]).astype(np.int64)
    if _int(a, "batch_dims", 0) != 0:
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


def _scatter(a: Args, step: _Step) -> np.ndarray:
    data = a["data"]
    axis = _int(a, "axis", 0) % data.ndim
    idx = np.asarray(a["indices"]).astype(np.int64).reshape(-1)
    moved = np.moveaxis(data, axis, 0)
    upd = np.moveaxis(a["updates"], axis, 0)
    out = _scatter_into(moved, (idx,), upd, _str(a, "mode", "add"))
    return np.moveaxis(out, 0, axis)


def _scatter_along_axis(a: Args, step: _Step) -> np.ndarray:
    data = a["data"]
    axis = _int(a, "axis", 0) % data.ndim
    idx = np.asarray(a["indices"]).astype(np.int64)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    return _scatter_into(data, tuple(grid), a["updates"], _str(a, "mode", "add"))


def _scatter_nd(a: Args, step: _Step) -> np.ndarray:
    idx = np.asarray(a["indices"]).astype(np.int64)
    index = tuple(np.moveaxis(idx, -1, 0))
    return _scatter_into(a["data"], index, a["updates"], _str(a, "mode", "add"))


def _one_hot(a: Args, step: _Step) -> np.ndarray:
    idx = np.asarray(a["indices"])
    size = int(a["one_hot_vector_size"])
    hot = np.expand_dims(idx, -1) == np.arange(size)
    y = np.where(hot, a.get("on_value", 1), a.get("off_value", 0))
    return np.moveaxis(y, -1, _int(a, "axis", -1))


def _argsort(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    key = x if _bool(a, "ascending", False) else -x
    return np.argsort(key, axis=_int(a, "axis", -1), kind="stable")


def _topk(a: Args, step: _Step) -> tuple[np.ndarray, np.ndarray]:
    x = a["x"]
    axis = _int(a, "axis", -1)
    key = x if _bool(a, "ascending", False) else -x
    idx = np.take(np.argsort(key, axis=axis, kind="stable"), np.arange(_int(a, "k", 1)), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx


def _non_zero(a: Args, step: _Step) -> np.ndarray:
    return np.argwhere(a["x"])


def _pixel_shuffle(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    r = int(a["upscale_factor"])
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


def _pixel_unshuffle(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    r = int(a["downscale_factor"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * r * r, h // r, w // r)


# --------------------------------------------------------------------------
# resizing
# --------------------------------------------------------------------------


def _grid(mode: str, n_in: int, n_out: int) -> np.ndarray:
    """Source coordinates per output index for each MIL sampling mode."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2.0 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        g = i * (n_in - n_in / n_out) / (n_out - 1) if n_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        g = (i + 0.5) * n_in / n_out - 0.5
    elif mode == "ASYMMETRIC":  # upsample_bilinear(align_corners=False, half_pixel_centers=False)
        g = i * n_in / n_out
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return np.clip(g, 0, n_in - 1)


def _lerp_axis(x: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (coords - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _bilinear(x: np.ndarray, out_hw: Sequence[int], mode: str) -> np.ndarray:
    y = _lerp_axis(x, x.ndim - 2, _grid(mode, x.shape[-2], out_hw[0]))
    return _lerp_axis(y, x.ndim - 1, _grid(mode, x.shape[-1], out_hw[1]))


def _nearest_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = x.shape[axis]
    src = np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)
    return np.take(x, src, axis=axis)


def _nearest(x: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    y = _nearest_axis(x, x.ndim - 2, out_hw[0])
    return _nearest_axis(y, x.ndim - 1, out_hw[1])


def _scaled_hw(a: Args, x: np.ndarray) -> list[int]:
    sh = _float(a, "scale_factor_height", 1.0)
    sw = _float(a, "scale_factor_width", 1.0)
    return [math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw)]


def _upsample_nearest_neighbor(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    return _nearest(x, _scaled_hw(a, x))


def _upsample_bilinear(a: Args, step: _Step) -> np.ndarray:
    x = a["x"]
    align = _bool(a, "align_corners", True)
    half = _bool(a, "half_pixel_centers", not align)
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "ASYMMETRIC")
    return _bilinear(x, _scaled_hw(a, x), mode)


def _resize_nearest_neighbor(a: Args, step: _Step) -> np.ndarray:
    return _nearest(a["x"], [int(a["target_size_height"]), int(a["target_size_width"])])


def _resize_bilinear(a: Args, step: _Step) -> np.ndarray:
    hw = [_int(a, "target_size_height", 1), _int(a, "target_size_width", 1)]
    return _bilinear(a["x"], hw, _str(a, "sampling_mode", "DEFAULT"))


def _resize(a: Args, step: _Step) -> np.ndarray:
    """iOS17 resize: resize the trailing ``resized_dims`` dims (0 keeps a dim)."""
    x = a["x"]
    k = int(a["resized_dims"])
    target = _ints(a["shape"], [])[-k:] if k else []
    linear = _str(a, "interpolation_mode", "LINEAR") == "LINEAR"
    mode = _str(a, "sampling_mode", "DEFAULT")
    for j, size in enumerate(target):
        axis = x.ndim - k + j
        size = size or x.shape[axis]
        x = _lerp_axis(x, axis, _grid(mode, x.shape[axis], size)) if linear else _nearest_axis(x, axis, size)
    return x


# --------------------------------------------------------------------------
# quantisation (activation quantize / dequantize, iOS17)
# --------------------------------------------------------------------------


def _qparams(a: Args, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = _int(a, "axis", 0)
    scale = _per_channel(np.asarray(a["scale"], np.float32), x.ndim, axis % max(x.ndim, 1))
    zp = a.get("zero_point")
    zp = np.zeros((), np.float32) if zp is None else _per_channel(np.asarray(zp), x.ndim, axis % max(x.ndim, 1))
    return scale, zp.astype(np.float32)


_QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def _quantize(a: Args, step: _Step) -> np.ndarray:
    x = a["input"]
    scale, zp = _qparams(a, x)
    lo, hi = _QUANT_RANGES[_str(a, "output_dtype", "int8")]
    return np.clip(np.rint(x / scale + zp), lo, hi)


def _dequantize(a: Args, step: _Step) -> np.ndarray:
    x = np.asarray(a["input"], np.float32)
    scale, zp = _qparams(a, x)
    return (x - zp) * scale


# --------------------------------------------------------------------------
# dispatch table
# --------------------------------------------------------------------------

_E = "elementwise"
_B = "elementwise, numpy broadcasting"

_KERNELS: dict[str, tuple[Callable[[Args, _Step], Any], str]] = {
    # unary math
    "abs": (_unary(np.abs), _E),
    "acos": (_unary(np.arccos), _E),
    "asin": (_unary(np.arcsin), _E),
    "atan": (_unary(np.arctan), _E),
    "atanh": (_unary(np.arctanh), _E),
    "ceil": (_unary(np.ceil), _E),
    "cos": (_unary(np.cos), _E),
    "cosh": (_unary(np.cosh), _E),
    "erf": (_unary(_erf), "elementwise, rational approximation (|err| < 2e-7)"),
    "exp": (_unary(np.exp), _E),
    "exp2": (_unary(np.exp2), _E),
    "floor": (_unary(np.floor), _E),
    "inverse": (_with_epsilon(lambda x, e: 1.0 / (x + e), 1e-4), "1 / (x + epsilon)"),
    "log": (_with_epsilon(lambda x, e: np.log(x + e), 1e-45), "log(x + epsilon)"),
    "logical_not": (_unary(np.logical_not), _E),
    "round": (_unary(np.round), "round half to even"),
    "rsqrt": (_with_epsilon(lambda x, e: 1.0 / np.sqrt(x + e), 1e-12), "1 / sqrt(x + epsilon)"),
    "sign": (_unary(np.sign), _E),
    "sin": (_unary(np.sin), _E),
    "sinh": (_unary(np.sinh), _E),
    "sqrt": (_unary(np.sqrt), _E),
    "square": (_unary(np.square), _E),
    "tan": (_unary(np.tan), _E),
    "tanh": (_unary(np.tanh), _E),
    "identity": (_identity, "copy"),
    "cast": (_cast, "to the declared dtype (float->int truncates)"),
    # activations
    "relu": (_unary(lambda x: np.maximum(x, 0)), "activation"),
    "relu6": (_unary(_relu6), "activation"),
    "sigmoid": (_unary(_sigmoid), "activation"),
    "silu": (_unary(_silu), "activation"),
    "softsign": (_unary(_softsign), "activation"),
    "softplus": (_unary(_softplus), "activation, log(1 + exp(x))"),
    "gelu": (_gelu, "modes EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION"),
    "leaky_relu": (_leaky_relu, "activation"),
    "elu": (_elu, "activation"),
    "clip": (_clip, "clamp to [alpha, beta]"),
    "threshold": (_threshold, "max(x, alpha)"),
    "thresholded_relu": (_thresholded_relu, "activation"),
    "clamped_relu": (_clamped_relu, "activation"),
    "prelu": (_prelu, "per-channel alpha on axis 1"),
    "sigmoid_hard": (_sigmoid_hard, "activation"),
    "scaled_tanh": (_scaled_tanh, "activation"),
    "linear_activation": (_linear_activation, "alpha * x + beta"),
    "softplus_parametric": (_softplus_parametric, "per-channel alpha, beta on axis 1"),
    "softmax": (_softmax, "numerically stable"),
    # binary
    "add": (_binary(np.add), _B),
    "sub": (_binary(np.subtract), _B),
    "mul": (_binary(np.multiply), _B),
    "real_div": (_binary(np.true_divide), _B),
    "floor_div": (_binary(_floor_div), _B),
    "mod": (_binary(np.mod), "floor modulo (sign of divisor), broadcasting"),
    "pow": (_binary(np.power), _B),
    "maximum": (_binary(np.maximum), _B),
    "minimum": (_binary(np.minimum), _B),
    "equal": (_binary(np.equal), _B),
    "not_equal": (_binary(np.not_equal), _B),
    "greater": (_binary(np.greater), _B),
    "greater_equal": (_binary(np.greater_equal), _B),
    "less": (_binary(np.less), _B),
    "less_equal": (_binary(np.less_equal), _B),
    "logical_and": (_binary(np.logical_and), _B),
    "logical_or": (_binary(np.logical_or), _B),
    "logical_xor": (_binary(np.logical_xor), _B),
    "select": (_select, "where(cond, a, b)"),
    # reductions
    "reduce_sum": (_reduce(np.sum), "reduction"),
    "reduce_mean": (_reduce(np.mean), "reduction"),
    "reduce_max": (_reduce(np.max), "reduction"),
    "reduce_min": (_reduce(np.min), "reduction"),
    "reduce_prod": (_reduce(np.prod), "reduction"),
    "reduce_l1_norm": (_reduce(_l1), "reduction"),
    "reduce_l2_norm": (_reduce(_l2), "reduction"),
    "reduce_log_sum": (_reduce(_log_sum), "reduction"),
    "reduce_log_sum_exp": (_reduce(_log_sum_exp), "reduction, stable"),
    "reduce_sum_square": (_reduce(_sum_square), "reduction"),
    "reduce_argmax": (_reduce_arg(np.argmax), "first index on ties"),
    "reduce_argmin": (_reduce_arg(np.argmin), "first index on ties"),
    # linear algebra
    "linear": (_linear, "x @ W.T + b"),
    "matmul": (_matmul, "numpy matmul semantics, transpose_x/y"),
    "einsum": (_einsum, "numpy einsum"),
    "scaled_dot_product_attention": (_sdpa, "softmax(QK^T/sqrt(E) + mask) V; bool or float mask"),
    # conv / pool / norm
    "conv": (_conv, "1-3D, groups, strides, dilations, pad types (im2col matmul)"),
    "conv_transpose": (_conv_transpose, "1-3D, groups, strides, dilations, custom/valid/same pad"),
    "max_pool": (_max_pool, "1-3D, pad types, ceil_mode"),
    "avg_pool": (_avg_pool, "1-3D, pad types, ceil_mode, exclude_padding_from_average"),
    "l2_pool": (_l2_pool, "1-3D, pad types"),
    "batch_norm": (_batch_norm, "inference statistics"),
    "instance_norm": (_instance_norm, "over spatial axes"),
    "layer_norm": (_layer_norm, "over given axes, gamma/beta shaped like those axes"),
    "l2_norm": (_l2_norm, "over the last 3 axes"),
    # shape and indexing
    "reshape": (_reshape, "0 copies an input dim, -1 infers"),
    "transpose": (_transpose, "perm"),
    "concat": (_concat, "incl. interleave"),
    "stack": (_stack, "new axis"),
    "split": (_split, "num_splits or split_sizes"),
    "slice_by_index": (_slice_by_index, "begin/end/stride with begin/end/squeeze masks"),
    "slice_by_size": (_slice_by_size, "size -1 runs to the end"),
    "slice_update": (_slice_update, "functional x[slice] = update"),
    "squeeze": (_squeeze, "given axes or all size-1 dims"),
    "expand_dims": (_expand_dims, "axes relative to the output rank"),
    "flatten2d": (_flatten2d, "2-D reshape at axis"),
    "reverse": (_reverse, "given axes or all"),
    "tile": (_tile, "reps"),
    "crop": (_crop, "trim the last two dims"),
    "pad": (_pad, "constant, reflect, replicate on trailing dims"),
    "shape": (_shape, "int32"),
    "fill": (_fill, "constant tensor of a runtime shape"),
    "fill_like": (_fill_like, "constant tensor shaped like ref_tensor"),
    "range_1d": (_range_1d, "arange(start, end, step)"),
    "band_part": (_band_part, "keep a band of the last two dims"),
    "cumsum": (_cumsum, "exclusive / reverse"),
    "gather": (_gather, "axis, batch_dims, negative indices"),
    "gather_along_axis": (_gather_along_axis, "take_along_axis, negative indices"),
    "gather_nd": (_gather_nd, "batch_dims = 0 only"),
    "scatter": (_scatter, "modes update/add/sub/mul/div/max/min"),
    "scatter_along_axis": (_scatter_along_axis, "modes update/add/sub/mul/div/max/min"),
    "scatter_nd": (_scatter_nd, "modes update/add/sub/mul/div/max/min"),
    "one_hot": (_one_hot, "on/off values, axis"),
    "argsort": (_argsort, "stable"),
    "topk": (_topk, "stable, values and indices"),
    "non_zero": (_non_zero, "indices of non-zeros, [N, rank]"),
    "pixel_shuffle": (_pixel_shuffle, "NCHW, torch order"),
    "pixel_unshuffle": (_pixel_unshuffle, "NCHW, torch order"),
    # resizing
    "upsample_nearest_neighbor": (_upsample_nearest_neighbor, "src = floor(dst * in / out)"),
    "upsample_bilinear": (_upsample_bilinear, "align_corners / half_pixel_centers"),
    "resize_nearest_neighbor": (_resize_nearest_neighbor, "src = floor(dst * in / out)"),
    "resize_bilinear": (_resize_bilinear, "all MIL sampling modes"),
    "resize": (_resize, "iOS17; LINEAR (all sampling modes) or NEAREST_NEIGHBOR"),
    # activation quantisation
    "quantize": (_quantize, "iOS17; round half to even, saturating int8/uint8"),
    "dequantize": (_dequantize, "iOS17; (x - zero_point) * scale"),
}

# Ops that only ever produce constants: materialised once at load time.
_CONSTANT_OPS: dict[str, str] = {
    "const": "constant (inline or weight file)",
    "constexpr_affine_dequantize": "weights materialised at load (coremltools decompress)",
    "constexpr_blockwise_shift_scale": "weights materialised at load (coremltools decompress)",
    "constexpr_cast": "weights materialised at load (coremltools decompress)",
    "constexpr_lut_to_dense": "weights materialised at load (coremltools decompress)",
    "constexpr_lut_to_sparse": "weights materialised at load (coremltools decompress)",
    "constexpr_sparse_blockwise_shift_scale": "weights materialised at load (coremltools decompress)",
    "constexpr_sparse_to_dense": "weights materialised at load (coremltools decompress)",
}

SUPPORTED_OPS: frozenset[str] = frozenset(_KERNELS) | frozenset(_CONSTANT_OPS)


def supported_op_table() -> list[tuple[str, str]]:
    """(op type, note) for every supported op, sorted by op type."""
    notes = {name: note for name, (_, note) in _KERNELS.items()} | _CONSTANT_OPS
    return sorted(notes.items())


# --------------------------------------------------------------------------
# program loading and execution
# --------------------------------------------------------------------------


def _np_dtype(var: Any) -> np.dtype | None:
    """numpy dtype a MIL var declares (None for strings, lists, states)."""
    from coremltools.converters.mil.mil import types

    dtype = getattr(var, "dtype", None)
    if dtype is None or types.is_str(dtype):
        return None
    try:
        return np.dtype(types.nptype_from_builtin(dtype))
    except (TypeError, KeyError, ValueError):
        return None


def _static_shape(var: Any) -> tuple[int, ...] | None:
    shape = getattr(var, "shape", None)
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _to_compute(value: Any, dtype: np.dtype | None) -> Any:
    """Round to the declared dtype; fp16 is held as fp32 for the next kernel."""
    if dtype is None:
        return value
    arr = np.asarray(value)
    if dtype == np.float16:
        return arr.astype(np.float16).astype(np.float32)
    return arr.astype(dtype, copy=False)


def _to_external(value: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    return np.array(value, dtype=dtype) if dtype is not None else np.array(value)


def _const_value(var: Any) -> Any:
    val = var.val
    if isinstance(val, np.ndarray) and val.dtype == np.float16:
        return val.astype(np.float32)
    if isinstance(val, np.float16):
        return np.float32(val)
    return val


def _walk_ops(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def _is_constant(op: Any) -> bool:
    return op.op_type == "const" or (bool(op.outputs) and all(getattr(o, "val", None) is not None for o in op.outputs))


def _materialise(op: Any) -> tuple[Any, ...]:
    if all(o.val is not None for o in op.outputs):
        return tuple(o.val for o in op.outputs)
    vals = op.materialized_val_inference()
    return tuple(vals) if isinstance(vals, (tuple, list)) else (vals,)


def _arg_names(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(v.name for v in value)
    return value.name


class Program:
    """A loaded ML Program ``main`` function, ready to run on numpy inputs."""

    def __init__(self, function: Any) -> None:
        self._inputs = {name: (_np_dtype(var), var.shape) for name, var in function.inputs.items()}
        self.input_names: list[str] = list(self._inputs)
        self.output_names: list[str] = [v.name for v in function.outputs]
        self._output_dtypes = [_np_dtype(v) for v in function.outputs]
        self._consts: dict[str, Any] = {}
        self._steps: list[_Step] = []
        self._op_types = frozenset(op.op_type for op in _walk_ops(function))
        unsupported = set()
        for op in _walk_ops(function):
            if not _is_constant(op) and op.op_type not in SUPPORTED_OPS:
                unsupported.add(op.op_type)
        self._unsupported = tuple(sorted(unsupported))
        if not self._unsupported:
            for op in function.operations:
                self._add_op(op)
        fp16 = any(_np_dtype(o) == np.float16 for op in function.operations if not _is_constant(op) for o in op.outputs)
        self.compute_precision: str = "float16" if fp16 else "float32"

    def _add_op(self, op: Any) -> None:
        if op.op_type in _CONSTANT_OPS and op.op_type != "const":
            values = _materialise(op)
        elif _is_constant(op):
            values = tuple(_const_value(o) for o in op.outputs)
        else:
            self._steps.append(
                _Step(
                    op_type=op.op_type,
                    name=op.name,
                    kernel=_KERNELS[op.op_type][0],
                    args=tuple((k, _arg_names(v)) for k, v in op.inputs.items()),
                    out_names=tuple(o.name for o in op.outputs),
                    out_dtypes=tuple(_np_dtype(o) for o in op.outputs),
                    out_shapes=tuple(_static_shape(o) for o in op.outputs),
                )
            )
            return
        for var, value in zip(op.outputs, values):
            self._consts[var.name] = _to_compute(value, _np_dtype(var))

    def unsupported_ops(self) -> tuple[str, ...]:
        """Sorted op types in the program that have no kernel here."""
        return self._unsupported

    def _prepare_input(self, name: str, value: Any) -> np.ndarray:
        dtype, shape = self._inputs[name]
        arr = np.asarray(value)
        if len(shape) != arr.ndim or any(isinstance(d, (int, np.integer)) and d != n for d, n in zip(shape, arr.shape)):
            raise ValueError(f"input {name!r}: expected shape {tuple(shape)}, got {arr.shape}")
        return _to_compute(arr if dtype is None else arr.astype(dtype), dtype)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Evaluate ``main`` on ``inputs``; outputs keep the model's declared dtypes."""
        if self._unsupported:
            raise UnsupportedOps(self._unsupported)
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self._inputs]
        if missing or unknown:
            raise ValueError(f"inputs: missing {missing}, unknown {unknown}")
        env = dict(self._consts)
        for name in self.input_names:
            env[name] = self._prepare_input(name, inputs[name])
        with np.errstate(all="ignore"):
            for step in self._steps:
                self._execute(step, env)
        return {name: _to_external(env[name], dtype) for name, dtype in zip(self.output_names, self._output_dtypes)}

    @staticmethod
    def _execute(step: _Step, env: dict[str, Any]) -> None:
        a = {k: env[v] if isinstance(v, str) else [env[n] for n in v] for k, v in step.args}
        try:
            out = step.kernel(a, step)
        except Exception as exc:
            raise RuntimeError(f"MIL op {step.op_type} ({step.name!r}) failed: {exc}") from exc
        outs = out if isinstance(out, tuple) else (out,)
        for name, dtype, value in zip(step.out_names, step.out_dtypes, outs):
            env[name] = _to_compute(value, dtype)


def load(mlpackage_path: str | os.PathLike) -> Program:
    """Parse a saved ML Program (.mlpackage) once, for repeated :meth:`Program.run`."""
    ct = _coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    path = os.fspath(mlpackage_path)
    with _quiet():
        model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path} is not an ML Program (type {spec.WhichOneof('Type')!r})")
    weights_dir = model.weights_dir or os.path.join(path, "Data", "com.apple.CoreML", "weights")
    with _quiet():
        program = milproto_load(spec, spec.specificationVersion, file_weights_dir=weights_dir)
    if "main" not in program.functions:
        raise ValueError(f"{path}: no 'main' function in the ML Program")
    return Program(program.functions["main"])
