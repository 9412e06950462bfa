"""Activation quantize / dequantize (iOS17) and the constexpr weight ops, which are
materialised once at load time by coremltools' own decompression."""

from __future__ import annotations

import numpy as np

from .registry import Args, Step, constant_op, int_of, kernel, per_channel, str_of


def _qparams(a: Args, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = int_of(a, "axis", 0)
    scale = per_channel(np.asarray(a["scale"], np.float32), x.ndim, axis % max(x.ndim, 1))
    zp = a.get("zero_point")
    zp = np.zeros((), np.float32) if zp is None else per_channel(np.asarray(zp), x.ndim, axis % max(x.ndim, 1))
    return scale, zp.astype(np.float32)


_QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


@kernel("quantize", "iOS17; round half to even, saturating int8/uint8")
def _quantize(a: Args, step: Step) -> np.ndarray:
    x = a["input"]
    scale, zp = _qparams(a, x)
    lo, hi = _QUANT_RANGES[str_of(a, "output_dtype", "int8")]
    return np.clip(np.rint(x / scale + zp), lo, hi)


@kernel("dequantize", "iOS17; (x - zero_point) * scale")
def _dequantize(a: Args, step: Step) -> np.ndarray:
    x = np.asarray(a["input"], np.float32)
    scale, zp = _qparams(a, x)
    return (x - zp) * scale


for _op in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_cast",
            "constexpr_lut_to_dense", "constexpr_lut_to_sparse", "constexpr_sparse_blockwise_shift_scale",
            "constexpr_sparse_to_dense"):
    constant_op(_op, "weights materialised at load (coremltools decompress)")
