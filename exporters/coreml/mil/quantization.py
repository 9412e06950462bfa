"""Activation quantize / dequantize (iOS17) and the constexpr weight ops, which are
materialised once at load time by coremltools' own decompression, except
``constexpr_blockwise_shift_scale`` (iOS18 per-block int4/int8), which stays compressed
(``Blockwise``) and is dequantized by each op that reads it once its package's budget for
dense copies (``WeightPool``) is spent."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .registry import Args, Step, constant_op, int_of, kernel, per_channel, str_of
from .state import to_compute


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


class WeightPool:
    """What the functions of one package share: the int codes of each blockwise weight (a
    multifunction package stores a weight its functions share once, but the loader reads it once
    per function), and dense copies of the first weights read, up to ``dense_budget`` bytes.

    The budget is what keeps small quantized models fast (a tiny LM's decode would otherwise
    dequantize every weight at every token) without giving back the memory a large one saves:
    once it is spent, further weights are dequantized per op, as before."""

    DEFAULT_DENSE_BUDGET = 64 << 20

    def __init__(self, dense_budget: int = DEFAULT_DENSE_BUDGET) -> None:
        self.codes: dict[tuple[Any, ...], np.ndarray] = {}
        self.dense: dict[tuple[Any, ...], np.ndarray] = {}
        self.room = dense_budget

    def shared(self, data: np.ndarray) -> tuple[tuple[Any, ...], np.ndarray]:
        data = np.ascontiguousarray(data)
        key = (data.dtype.str, data.shape, hashlib.blake2b(data).digest())
        return key, self.codes.setdefault(key, data)

    def keep(self, key: tuple[Any, ...], dense: np.ndarray) -> None:
        if dense.nbytes <= self.room:
            self.dense[key] = dense
            self.room -= dense.nbytes


class Blockwise:
    """A ``constexpr_blockwise_shift_scale`` weight kept as its int codes, dequantized by each
    op that reads it (``Program`` resolves it per op) unless its pool keeps a dense copy.

    Materialising every weight at load would hold fp32 copies of them all: 4 GB for a 1 B
    parameter LLM, per function, where the codes take 1 byte per weight (numpy has no int4).
    The arithmetic is coremltools' ``constexpr_blockwise_shift_scale.decompress``:
    ``scale * (data - offset)`` in the scale's dtype, each scale over its block, written as a
    broadcast over interleaved block axes instead of ``np.repeat`` copies."""

    def __init__(self, data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None, dtype: np.dtype | None,
                 pool: WeightPool) -> None:
        codes_key, self.data = pool.shared(data)
        self.scale, self.offset, self.dtype, self._pool = scale, offset, dtype, pool
        self._key = (codes_key, hashlib.blake2b(np.ascontiguousarray(scale)).digest(),
                     None if offset is None else hashlib.blake2b(np.ascontiguousarray(offset)).digest())

    def materialise(self) -> np.ndarray:
        if (dense := self._pool.dense.get(self._key)) is not None:
            return dense
        blocked, per_block = [], []
        for size, blocks in zip(self.data.shape, self.scale.shape):
            blocked += [blocks, size // blocks]
            per_block += [blocks, 1]
        x = self.data.astype(self.scale.dtype).reshape(blocked)
        if self.offset is not None:
            x = x - self.offset.reshape(per_block)
        dense = to_compute((x * self.scale.reshape(per_block)).reshape(self.data.shape), self.dtype)
        self._pool.keep(self._key, dense)
        return dense


for _op in ("constexpr_affine_dequantize", "constexpr_cast",
            "constexpr_lut_to_dense", "constexpr_lut_to_sparse", "constexpr_sparse_blockwise_shift_scale",
            "constexpr_sparse_to_dense"):
    constant_op(_op, "weights materialised at load (coremltools decompress)")
constant_op("constexpr_blockwise_shift_scale", "weights kept as int codes, dequantized per op that reads them")
