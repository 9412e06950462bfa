"""The kernel registry and the argument helpers every op family shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Args = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One non-constant op, resolved once at load time."""

    op_type: str
    name: str
    kernel: Callable[[Args, Step], Any]
    args: tuple[tuple[str, str | tuple[str, ...]], ...]
    out_names: tuple[str, ...]
    out_dtypes: tuple[np.dtype | None, ...]
    out_shapes: tuple[tuple[int, ...] | None, ...]
    rounded: bool = False
    """The kernel's outputs already hold values of their declared dtypes (see ``VALUE_PRESERVING``),
    so the executor skips rounding them: for an fp16 KV cache that rounding is two full copies."""
    lazy: bool = False
    """Some argument is a list of values or a compressed weight, resolved per call."""


Kernel = Callable[[Args, Step], Any]

KERNELS: dict[str, tuple[Kernel, str]] = {}
"""MIL op type -> (numpy kernel, note for ``edge-export coreml-ops``)."""

CONSTANT_OPS: dict[str, str] = {"const": "constant (inline or weight file)"}
"""Ops that only ever produce constants: materialised once at load time."""

VALUE_PRESERVING: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("reshape", "transpose", "expand_dims", "squeeze", "slice_by_index", "slice_by_size", "split",
                     "tile", "identity", "gather", "gather_along_axis", "cast"), ("x",)),
    "concat": ("values",), "slice_update": ("x", "update"), "read_state": ("input",),
    "coreml_update_state": ("value",)}
"""Ops whose outputs only move, copy or select the values of the listed arguments: when each of
those already has the output's declared dtype (every value in the executor holds values of its
declared dtype), the output does too."""


def kernel(op_type: str, note: str) -> Callable[[Kernel], Kernel]:
    """Register ``fn(args, step)`` as the kernel of MIL ``op_type``.

    Used as ``@kernel("conv", "note")`` on a function, or called on a kernel that a
    factory builds: ``kernel("abs", "elementwise")(_unary(np.abs))``.
    """

    def register(fn: Kernel) -> Kernel:
        if op_type in KERNELS or op_type in CONSTANT_OPS:
            raise ValueError(f"MIL op {op_type!r} registered twice")
        KERNELS[op_type] = (fn, note)
        return fn

    return register


def constant_op(op_type: str, note: str) -> None:
    """Declare an op whose outputs are constants (coremltools materialises them at load)."""
    if op_type in KERNELS or op_type in CONSTANT_OPS:
        raise ValueError(f"MIL op {op_type!r} registered twice")
    CONSTANT_OPS[op_type] = note


def supported_ops() -> frozenset[str]:
    return frozenset(KERNELS) | frozenset(CONSTANT_OPS)


def supported_op_table() -> list[tuple[str, str]]:
    """(op type, note) for every supported op, sorted by op type."""
    notes = {name: note for name, (_, note) in KERNELS.items()} | CONSTANT_OPS
    return sorted(notes.items())


# --------------------------------------------------------------------------
# argument helpers: MIL passes optional scalars and lists as numpy values or None
# --------------------------------------------------------------------------


def ints(value: Any, default: Sequence[int]) -> list[int]:
    if value is None:
        return list(default)
    return [int(v) for v in np.ravel(value)]


def int_of(a: Args, key: str, default: int) -> int:
    return int(a[key]) if a.get(key) is not None else default


def float_of(a: Args, key: str, default: float) -> float:
    return float(a[key]) if a.get(key) is not None else default


def bool_of(a: Args, key: str, default: bool) -> bool:
    return bool(a[key]) if a.get(key) is not None else default


def str_of(a: Args, key: str, default: str) -> str:
    return str(a[key]) if a.get(key) is not None else default


def axes_of(a: Args, key: str, ndim: int) -> tuple[int, ...] | None:
    """Normalised axes, or None meaning 'all axes'."""
    if a.get(key) is None:
        return None
    return tuple(sorted(int(v) % ndim for v in np.ravel(a[key])))


def per_channel(v: np.ndarray, ndim: int, axis: int = 1) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis``."""
    v = np.asarray(v)
    if v.ndim != 1:
        return v
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def add_bias(y: np.ndarray, bias: Any, owned: bool = False) -> np.ndarray:
    """``y`` plus a per-channel ``bias``; ``owned``: ``y`` is the calling op's own fresh array,
    so the bias is added in place (no copy) when that keeps ``y``'s dtype."""
    if bias is None:
        return y
    b = per_channel(bias, y.ndim)
    if owned and y.flags.writeable and np.result_type(y, b) == y.dtype:
        y += b
        return y
    return y + b
