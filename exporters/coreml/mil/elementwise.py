"""Elementwise math, activations, softmax, select and reductions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .registry import Args, Step, axes_of, bool_of, float_of, int_of, kernel, per_channel, str_of

ELEMENTWISE = "elementwise"
BROADCAST = "elementwise, numpy broadcasting"


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


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Args, Step], np.ndarray]:
    def run(a: Args, step: Step) -> np.ndarray:
        return fn(a["x"])

    return run


def _binary(fn: Callable[[Any, Any], np.ndarray]) -> Callable[[Args, Step], np.ndarray]:
    def run(a: Args, step: Step) -> np.ndarray:
        return fn(a["x"], a["y"])

    return run


def _with_epsilon(fn: Callable[[np.ndarray, float], np.ndarray], eps: float) -> Callable:
    def run(a: Args, step: Step) -> np.ndarray:
        return fn(a["x"], float_of(a, "epsilon", eps))

    return run


def _floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.floor_divide(x, y)


@kernel("identity", "copy")
def _identity(a: Args, step: Step) -> np.ndarray:
    return a["x"]


@kernel("cast", "to the declared dtype (float->int truncates)")
def _cast(a: Args, step: Step) -> np.ndarray:
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


@kernel("gelu", "modes EXACT, TANH_APPROXIMATION, SIGMOID_APPROXIMATION")
def _gelu(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    mode = str_of(a, "mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        k = np.float32(math.sqrt(2.0 / math.pi))
        return 0.5 * x * (1.0 + np.tanh(k * (x + np.float32(0.044715) * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


@kernel("leaky_relu", "activation")
def _leaky_relu(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    return np.where(x >= 0, x, x * float_of(a, "alpha", 0.01))


@kernel("elu", "activation")
def _elu(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    return np.where(x > 0, x, float_of(a, "alpha", 1.0) * np.expm1(np.minimum(x, 0)))


@kernel("clip", "clamp to [alpha, beta]")
def _clip(a: Args, step: Step) -> np.ndarray:
    y = np.maximum(a["x"], a["alpha"])  # a fresh array: the min is written into it
    fits = (np.broadcast_shapes(y.shape, np.shape(a["beta"])) == y.shape
            and np.result_type(y, a["beta"]) == y.dtype)
    return np.minimum(y, a["beta"], out=y) if fits else np.minimum(y, a["beta"])


@kernel("threshold", "max(x, alpha)")
def _threshold(a: Args, step: Step) -> np.ndarray:
    return np.maximum(a["x"], a["alpha"])


@kernel("thresholded_relu", "activation")
def _thresholded_relu(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    return np.where(x > float_of(a, "alpha", 1.0), x, 0).astype(x.dtype)


@kernel("clamped_relu", "activation")
def _clamped_relu(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    y = np.where(x >= 0, x, x * float_of(a, "alpha", 0.0))
    return np.minimum(y, float_of(a, "beta", 6.0))


@kernel("prelu", "per-channel alpha on axis 1")
def _prelu(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    alpha = per_channel(a["alpha"], x.ndim)
    return np.where(x >= 0, x, x * alpha)


@kernel("sigmoid_hard", "activation")
def _sigmoid_hard(a: Args, step: Step) -> np.ndarray:
    y = float_of(a, "alpha", 0.2) * a["x"] + float_of(a, "beta", 0.5)
    return np.clip(y, 0.0, 1.0)


@kernel("scaled_tanh", "activation")
def _scaled_tanh(a: Args, step: Step) -> np.ndarray:
    return float_of(a, "alpha", 1.0) * np.tanh(float_of(a, "beta", 1.0) * a["x"])


@kernel("linear_activation", "alpha * x + beta")
def _linear_activation(a: Args, step: Step) -> np.ndarray:
    return float_of(a, "alpha", 1.0) * a["x"] + float_of(a, "beta", 0.0)


@kernel("softplus_parametric", "per-channel alpha, beta on axis 1")
def _softplus_parametric(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    alpha = per_channel(a["alpha"], x.ndim)
    beta = per_channel(a["beta"], x.ndim)
    return alpha * np.logaddexp(np.float32(0.0), beta * x)


def stable_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@kernel("softmax", "numerically stable")
def _softmax(a: Args, step: Step) -> np.ndarray:
    return stable_softmax(a["x"], int_of(a, "axis", -1))


@kernel("select", "where(cond, a, b)")
def _select(a: Args, step: Step) -> np.ndarray:
    return np.where(a["cond"], a["a"], a["b"])


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[[Args, Step], np.ndarray]:
    def run(a: Args, step: Step) -> np.ndarray:
        x = a["x"]
        return fn(x, axis=axes_of(a, "axes", x.ndim), keepdims=bool_of(a, "keep_dims", False))

    return run


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


def _reduce_arg(fn: Callable[..., np.ndarray]) -> Callable[[Args, Step], np.ndarray]:
    def run(a: Args, step: Step) -> np.ndarray:
        axis = int_of(a, "axis", -1)
        return fn(a["x"], axis=axis, keepdims=bool_of(a, "keep_dims", False))

    return run


kernel("abs", ELEMENTWISE)(_unary(np.abs))
kernel("acos", ELEMENTWISE)(_unary(np.arccos))
kernel("asin", ELEMENTWISE)(_unary(np.arcsin))
kernel("atan", ELEMENTWISE)(_unary(np.arctan))
kernel("atanh", ELEMENTWISE)(_unary(np.arctanh))
kernel("ceil", ELEMENTWISE)(_unary(np.ceil))
kernel("cos", ELEMENTWISE)(_unary(np.cos))
kernel("cosh", ELEMENTWISE)(_unary(np.cosh))
kernel("erf", "elementwise, rational approximation (|err| < 2e-7)")(_unary(_erf))
kernel("exp", ELEMENTWISE)(_unary(np.exp))
kernel("exp2", ELEMENTWISE)(_unary(np.exp2))
kernel("floor", ELEMENTWISE)(_unary(np.floor))
kernel("inverse", "1 / (x + epsilon)")(_with_epsilon(lambda x, e: 1.0 / (x + e), 1e-4))
kernel("log", "log(x + epsilon)")(_with_epsilon(lambda x, e: np.log(x + e), 1e-45))
kernel("logical_not", ELEMENTWISE)(_unary(np.logical_not))
kernel("round", "round half to even")(_unary(np.round))
kernel("rsqrt", "1 / sqrt(x + epsilon)")(_with_epsilon(lambda x, e: 1.0 / np.sqrt(x + e), 1e-12))
kernel("sign", ELEMENTWISE)(_unary(np.sign))
kernel("sin", ELEMENTWISE)(_unary(np.sin))
kernel("sinh", ELEMENTWISE)(_unary(np.sinh))
kernel("sqrt", ELEMENTWISE)(_unary(np.sqrt))
kernel("square", ELEMENTWISE)(_unary(np.square))
kernel("tan", ELEMENTWISE)(_unary(np.tan))
kernel("tanh", ELEMENTWISE)(_unary(np.tanh))
kernel("relu", "activation")(_unary(lambda x: np.maximum(x, 0)))
kernel("relu6", "activation")(_unary(_relu6))
kernel("sigmoid", "activation")(_unary(_sigmoid))
kernel("silu", "activation")(_unary(_silu))
kernel("softsign", "activation")(_unary(_softsign))
kernel("softplus", "activation, log(1 + exp(x))")(_unary(_softplus))
kernel("add", BROADCAST)(_binary(np.add))
kernel("sub", BROADCAST)(_binary(np.subtract))
kernel("mul", BROADCAST)(_binary(np.multiply))
kernel("real_div", BROADCAST)(_binary(np.true_divide))
kernel("floor_div", BROADCAST)(_binary(_floor_div))
kernel("mod", "floor modulo (sign of divisor), broadcasting")(_binary(np.mod))
kernel("pow", BROADCAST)(_binary(np.power))
kernel("maximum", BROADCAST)(_binary(np.maximum))
kernel("minimum", BROADCAST)(_binary(np.minimum))
kernel("equal", BROADCAST)(_binary(np.equal))
kernel("not_equal", BROADCAST)(_binary(np.not_equal))
kernel("greater", BROADCAST)(_binary(np.greater))
kernel("greater_equal", BROADCAST)(_binary(np.greater_equal))
kernel("less", BROADCAST)(_binary(np.less))
kernel("less_equal", BROADCAST)(_binary(np.less_equal))
kernel("logical_and", BROADCAST)(_binary(np.logical_and))
kernel("logical_or", BROADCAST)(_binary(np.logical_or))
kernel("logical_xor", BROADCAST)(_binary(np.logical_xor))
kernel("reduce_sum", "reduction")(_reduce(np.sum))
kernel("reduce_mean", "reduction")(_reduce(np.mean))
kernel("reduce_max", "reduction")(_reduce(np.max))
kernel("reduce_min", "reduction")(_reduce(np.min))
kernel("reduce_prod", "reduction")(_reduce(np.prod))
kernel("reduce_l1_norm", "reduction")(_reduce(_l1))
kernel("reduce_l2_norm", "reduction")(_reduce(_l2))
kernel("reduce_log_sum", "reduction")(_reduce(_log_sum))
kernel("reduce_log_sum_exp", "reduction, stable")(_reduce(_log_sum_exp))
kernel("reduce_sum_square", "reduction")(_reduce(_sum_square))
kernel("reduce_argmax", "first index on ties")(_reduce_arg(np.argmax))
kernel("reduce_argmin", "first index on ties")(_reduce_arg(np.argmin))
