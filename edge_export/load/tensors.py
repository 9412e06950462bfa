"""Tensor specs (name, shape, dtype) and the ``--input NAME=1x3x224x224:float32`` syntax.

Kept free of torch so that argument errors never pay for importing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_export.errors import UsageError

# numpy dtype names we accept, and what a phone runtime can feed.
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
_SPEC = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<shape>\d+(?:x\d+)*)(?::(?P<dtype>\w+))?$")


@dataclass(frozen=True)
class DynamicDim:
    """A dimension of an input that the user declared variable: the artifact takes any size
    from ``min`` to ``max`` there (``shape`` holds the example's size)."""

    dim: int
    min: int
    max: int

    def to_json(self) -> dict:
        return {"dim": self.dim, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dynamic: tuple[DynamicDim, ...] = ()

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "dynamic_dims": [d.to_json() for d in self.dynamic]}


def parse_input_spec(text: str) -> TensorSpec:
    match = _SPEC.match(text.strip())
    if not match:
        raise UsageError(
            f"malformed --input {text!r}",
            hint="write NAME=DIMxDIM[:dtype], e.g. --input x=1x3x224x224:float32",
        )
    dtype = match["dtype"] or "float32"
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r} in --input {text!r}",
                         hint=f"use one of {', '.join(DTYPES)}")
    shape = tuple(int(d) for d in match["shape"].split("x"))
    if any(d == 0 for d in shape):
        raise UsageError(f"--input {text!r} has a zero-sized dimension")
    return TensorSpec(match["name"], shape, dtype)


_DYNAMIC = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*):(?P<dim>\d+)=(?P<min>\d+)\.\.(?P<max>\d+)$")


def parse_dynamic_spec(text: str) -> tuple[str, DynamicDim]:
    """``--dynamic input_ids:1=1..512``: input name, dimension index and its size range."""
    match = _DYNAMIC.match(text.strip())
    if not match:
        raise UsageError(f"malformed --dynamic {text!r}",
                         hint="write NAME:DIM=MIN..MAX, e.g. --dynamic input_ids:1=1..512")
    low, high = int(match["min"]), int(match["max"])
    if not 1 <= low <= high:
        raise UsageError(f"--dynamic {text!r}: the range must satisfy 1 <= MIN <= MAX")
    return match["name"], DynamicDim(int(match["dim"]), low, high)


def with_dynamic_dims(specs: list[TensorSpec], declared: dict[str, list[DynamicDim]]) -> list[TensorSpec]:
    """Attach declared dynamic dimensions to the input specs, checking each against the example:
    an unknown input, a dimension the input lacks, or an example size outside the range is the
    user's to fix."""
    names = [s.name for s in specs]
    for name in declared:
        if name not in names:
            raise UsageError(f"--dynamic names input {name!r}, which the model does not have",
                             hint=f"inputs: {', '.join(names)}")
    out = []
    for spec in specs:
        dims = tuple(sorted(declared.get(spec.name, []), key=lambda d: d.dim))
        for d in dims:
            if d.dim >= len(spec.shape):
                raise UsageError(f"--dynamic {spec.name}:{d.dim}: input {spec.name!r} has only "
                                 f"{len(spec.shape)} dimensions")
            if not d.min <= spec.shape[d.dim] <= d.max:
                raise UsageError(f"--dynamic {spec.name}:{d.dim}={d.min}..{d.max}: the example input "
                                 f"has size {spec.shape[d.dim]} there, outside the range")
        out.append(TensorSpec(spec.name, spec.shape, spec.dtype, dims))
    return out
