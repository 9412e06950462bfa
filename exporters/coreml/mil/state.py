"""iOS18 states: values that persist across calls of a stateful ML Program (a KV cache).

Core ML keeps them in an ``MLState`` that Apple's Python API cannot read; here a
:class:`State` holds them in numpy, so a test can inspect the cache between steps.
``read_state`` copies a state's value; ``coreml_update_state`` writes one and passes it on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .registry import Args, Step, kernel


def to_compute(value: Any, dtype: np.dtype | None) -> Any:
    """Round to the declared dtype; fp16 is held as fp32 for the next kernel."""
    if dtype is None:
        return value
    arr = np.asarray(value)
    if dtype == np.float16:
        return arr.astype(np.float16).astype(np.float32)
    return arr.astype(dtype, copy=False)


@dataclass(frozen=True)
class StateSpec:
    dtype: np.dtype
    shape: tuple[int, ...]


class State(Mapping[str, np.ndarray]):
    """The states of one stream of calls, zero-filled when created by ``Program.new_state``.

    Reading gives a copy in the declared dtype (float16 for Core ML states); assigning
    checks the shape and rounds to that dtype.
    """

    def __init__(self, specs: Mapping[str, StateSpec]) -> None:
        self._specs = dict(specs)
        self._values = {name: np.zeros(s.shape, np.float32 if s.dtype == np.float16 else s.dtype)
                        for name, s in self._specs.items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return np.array(self._values[name], dtype=self._specs[name].dtype)

    def __setitem__(self, name: str, value: Any) -> None:
        spec = self._specs[name]
        arr = np.asarray(value)
        if arr.shape != spec.shape:
            raise ValueError(f"state {name!r}: expected shape {spec.shape}, got {arr.shape}")
        self._values[name] = np.array(to_compute(arr, spec.dtype), copy=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def slot(self, name: str) -> _Slot:
        return _Slot(self, name)

    def _read(self, name: str) -> np.ndarray:
        # no copy: kernels never write into their inputs, and a write replaces the array
        return self._values[name]

    def _write(self, name: str, value: np.ndarray) -> None:
        self._values[name] = value


@dataclass(frozen=True)
class _Slot:
    """What a state variable holds in the executor's environment."""

    state: State
    name: str


@kernel("read_state", "iOS18; the state's current value")
def _read_state(a: Args, step: Step) -> np.ndarray:
    slot: _Slot = a["input"]
    return slot.state._read(slot.name)


@kernel("coreml_update_state", "iOS18; writes the state, returns the value")
def _coreml_update_state(a: Args, step: Step) -> np.ndarray:
    slot: _Slot = a["state"]
    value = a["value"] if step.rounded else to_compute(a["value"], step.out_dtypes[0])
    slot.state._write(slot.name, value)
    return value
