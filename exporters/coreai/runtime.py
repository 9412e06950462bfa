"""Apple's Core AI runtime (``coreai.runtime``, shipped for Linux x86-64 in coreai-core) behind
the synchronous ``run(list_of_arrays) -> list_of_arrays`` contract of parity and latency.

The runtime is asynchronous and loads a model inside an async context manager
(``AIModelAsset.executable()``). One model stays loaded for the life of the runner: the
context is entered once on a private event loop and left when the runner is collected, so
parity over many samples and the latency loop do not pay the load each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FUNCTION = "main"  # coreai-torch's default entry point, the one lower() writes


class CoreAIRunner:
    """Runs one ``.aimodel``'s ``main`` function on ``coreai.runtime``.

    Inputs are cast at the boundary to the dtype the function declares: Core AI has no
    int64 tensors (coreai-torch declares an int64 model input as int32, and the runtime
    rejects an int64 array), and fp16 programs declare fp16 float inputs. Integer values
    outside int32 are refused rather than wrapped. Outputs come back as float32 (or the
    integer type declared), whatever precision the program computes in."""

    def __init__(self, artifact: Path) -> None:
        import coreai.runtime  # noqa: F401 - loads the native runtime
        from coreai.authoring.asset import AIModelAsset

        self._loop = asyncio.new_event_loop()
        self._stack = contextlib.AsyncExitStack()
        try:
            model = self._loop.run_until_complete(
                self._stack.enter_async_context(AIModelAsset.load(artifact).executable()))
            self._function = model.load_function(FUNCTION)
        except BaseException:
            _close(self._loop, self._stack)
            raise
        desc = self._function.desc
        self.input_names: list[str] = list(desc.input_names)
        self.output_names: list[str] = list(desc.output_names)
        self.input_dtypes: list[str] = [desc.input_descriptor(n).dtype for n in self.input_names]
        if list(desc.state_names):
            _close(self._loop, self._stack)
            raise ValueError(f"the program keeps state ({', '.join(desc.state_names)}): parity of "
                             "stateful Core AI programs is not implemented")
        weakref.finalize(self, _close, self._loop, self._stack)

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        from coreai.runtime import NDArray

        feed = {n: NDArray(_cast(n, x, dtype))
                for n, x, dtype in zip(self.input_names, inputs, self.input_dtypes, strict=True)}
        out = self._loop.run_until_complete(self._function(feed))
        return [_widen(out[n].numpy()) for n in self.output_names]


def _cast(name: str, array: Any, dtype: str) -> np.ndarray:
    import numpy as np

    array = np.asarray(array)
    target = np.dtype(dtype)
    if np.issubdtype(target, np.integer) and array.size and np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise ValueError(f"input {name!r} holds values outside {dtype}, the type the Core AI "
                             f"program declares")
    return np.ascontiguousarray(array.astype(target, copy=False))


def _widen(array: np.ndarray) -> np.ndarray:
    """fp16 outputs as float32 (parity metrics and apps read float32); others copied as they are."""
    import numpy as np

    return array.astype(np.float32) if array.dtype == np.float16 else np.array(array)


def _close(loop: asyncio.AbstractEventLoop, stack: contextlib.AsyncExitStack) -> None:
    """Unload the model (its temporary compiled copy is removed by the runtime's context)."""
    if not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.run_until_complete(stack.aclose())
        loop.close()
