"""Resizing and pixel (un)shuffle, with every MIL sampling mode."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .registry import Args, Step, bool_of, float_of, int_of, ints, kernel, str_of


@kernel("pixel_shuffle", "NCHW, torch order")
def _pixel_shuffle(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    r = int(a["upscale_factor"])
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


@kernel("pixel_unshuffle", "NCHW, torch order")
def _pixel_unshuffle(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    r = int(a["downscale_factor"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * r * r, h // r, w // r)


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
    sh = float_of(a, "scale_factor_height", 1.0)
    sw = float_of(a, "scale_factor_width", 1.0)
    return [math.floor(x.shape[-2] * sh), math.floor(x.shape[-1] * sw)]


@kernel("upsample_nearest_neighbor", "src = floor(dst * in / out)")
def _upsample_nearest_neighbor(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    return _nearest(x, _scaled_hw(a, x))


@kernel("upsample_bilinear", "align_corners / half_pixel_centers")
def _upsample_bilinear(a: Args, step: Step) -> np.ndarray:
    x = a["x"]
    align = bool_of(a, "align_corners", True)
    half = bool_of(a, "half_pixel_centers", not align)
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "ASYMMETRIC")
    return _bilinear(x, _scaled_hw(a, x), mode)


@kernel("resize_nearest_neighbor", "src = floor(dst * in / out)")
def _resize_nearest_neighbor(a: Args, step: Step) -> np.ndarray:
    return _nearest(a["x"], [int(a["target_size_height"]), int(a["target_size_width"])])


@kernel("resize_bilinear", "all MIL sampling modes")
def _resize_bilinear(a: Args, step: Step) -> np.ndarray:
    hw = [int_of(a, "target_size_height", 1), int_of(a, "target_size_width", 1)]
    return _bilinear(a["x"], hw, str_of(a, "sampling_mode", "DEFAULT"))


@kernel("resize", "iOS17; LINEAR (all sampling modes) or NEAREST_NEIGHBOR")
def _resize(a: Args, step: Step) -> np.ndarray:
    """iOS17 resize: resize the trailing ``resized_dims`` dims (0 keeps a dim)."""
    x = a["x"]
    k = int(a["resized_dims"])
    target = ints(a["shape"], [])[-k:] if k else []
    linear = str_of(a, "interpolation_mode", "LINEAR") == "LINEAR"
    mode = str_of(a, "sampling_mode", "DEFAULT")
    for j, size in enumerate(target):
        axis = x.ndim - k + j
        size = size or x.shape[axis]
        x = _lerp_axis(x, axis, _grid(mode, x.shape[axis], size)) if linear else _nearest_axis(x, axis, size)
    return x
