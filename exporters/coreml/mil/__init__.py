"""Reference executor for Core ML ML Program (.mlpackage) models, in numpy.

Core ML prediction is only available on macOS, so parity of a converted model
cannot be checked on Linux with coremltools alone. This package reads the MIL
program back out of a saved ``.mlpackage`` (via coremltools' milproto loader)
and evaluates one of its functions op by op with numpy kernels.

Precision emulation: every kernel computes in float32, then its result is cast
to the dtype the MIL program declares for that output. Float16 values are kept
as float32 arrays holding exactly-representable float16 values, so fp16
rounding, overflow to ``inf`` and precision loss happen where they would on a
device (accumulation inside a kernel is still fp32, which is kinder than some
devices).

Ops without a kernel are never guessed: :meth:`Program.run` raises
:class:`UnsupportedOps` naming all of them before anything is executed.

Stateful programs (iOS18 ``read_state`` / ``coreml_update_state``, e.g. a KV cache)::

    program = load("model.mlpackage")
    state = program.new_state()                  # zero-filled, one per stream of calls
    out1 = program.run(feeds1, state=state)      # writes the cache
    out2 = program.run(feeds2, state=state)      # sees what call 1 wrote
    state["k_cache"]                             # readable, unlike Core ML's MLState

Layout, one module per op family:

- ``registry``: the ``kernel`` decorator, the kernel table and shared argument helpers
- ``program``: loading (``load``, ``load_functions``) and the executor (``Program``)
- ``elementwise``: unary/binary math, activations, softmax, select, reductions
- ``linalg``: linear, matmul, einsum, scaled dot-product attention
- ``conv``: convolution, transposed convolution, pooling
- ``normalization``: batch / instance / layer / L2 norm
- ``shape``: reshape, transpose, concat, slicing, ``slice_update``, pad, fill, range
- ``gather``: gather, scatter, one-hot, sort, top-k
- ``resize``: upsample / resize, pixel (un)shuffle
- ``quantization``: quantize / dequantize and the constexpr weight-decompression ops
- ``state``: ``State`` and the state ops

Adding an op: write ``fn(args, step)`` in its family module, where ``args`` maps the
op's input names to numpy values (or None) and ``step`` carries the declared output
dtypes and shapes, and register it with ``@kernel("op_type", "note for coreml-ops")``
(or ``kernel("op_type", note)(factory(...))`` for kernels a factory builds). The note is
what ``edge-export coreml-ops`` prints; importing the module registers it.
"""

from __future__ import annotations

from . import (  # noqa: F401  (importing a family registers its kernels)
    conv,
    elementwise,
    gather,
    linalg,
    normalization,
    quantization,
    resize,
    shape,
    state,
)
from .program import Program, UnsupportedOps, load, load_functions
from .registry import supported_op_table, supported_ops
from .state import State

__all__ = ["Program", "State", "UnsupportedOps", "load", "load_functions", "supported_op_table", "supported_ops"]
