"""Batch, instance, layer and L2 normalisation."""

from __future__ import annotations

import numpy as np

from .registry import Args, Step, add_bias, axes_of, float_of, kernel, per_channel


@kernel("batch_norm", "inference statistics")
def _batch_norm(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    mean = per_channel(a["mean"], x.ndim)
    inv = 1.0 / np.sqrt(per_channel(a["variance"], x.ndim) + float_of(a, "epsilon", 1e-5))
    y = (x - mean) * inv
    if a.get("gamma") is not None:
        y = y * per_channel(a["gamma"], x.ndim)
    return add_bias(y, a.get("beta"))


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


@kernel("instance_norm", "over spatial axes")
def _instance_norm(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    y = _normalise(x, tuple(range(2, x.ndim)), float_of(a, "epsilon", 1e-5))
    if a.get("gamma") is not None:
        y = y * per_channel(a["gamma"], x.ndim)
    return add_bias(y, a.get("beta"))


@kernel("layer_norm", "over given axes, gamma/beta shaped like those axes")
def _layer_norm(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    axes = axes_of(a, "axes", x.ndim) or tuple(range(x.ndim))
    y = _normalise(x, axes, float_of(a, "epsilon", 1e-5))
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if a.get("gamma") is not None:
        y = y * np.reshape(a["gamma"], shape)
    if a.get("beta") is not None:
        y = y + np.reshape(a["beta"], shape)
    return y


@kernel("l2_norm", "over the last 3 axes")
def _l2_norm(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    axes = tuple(range(x.ndim - 3, x.ndim))
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + float_of(a, "epsilon", 1e-6))
    return x / norm
