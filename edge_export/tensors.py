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
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "dynamic_dims": []}


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
