"""Loading a saved ``.mlpackage`` and running one of its functions op by op."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .quantization import Blockwise, WeightPool
from .registry import CONSTANT_OPS, KERNELS, VALUE_PRESERVING, Step, supported_ops
from .state import State, StateSpec, to_compute


class UnsupportedOps(Exception):
    """The program uses MIL ops this executor has no kernel for."""

    def __init__(self, ops: Sequence[str]) -> None:
        self.ops: tuple[str, ...] = tuple(sorted(set(ops)))
        super().__init__("unsupported MIL ops: " + ", ".join(self.ops))


# --------------------------------------------------------------------------
# coremltools access (lazy: importing it costs seconds and pulls in torch)
# --------------------------------------------------------------------------

_NOISY_LOGGERS = ("coremltools", "torchao", "torch.utils._pytree")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide coremltools' version/proxy warnings; errors still propagate."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def coremltools() -> Any:
    with quiet():
        import coremltools

    return coremltools


# --------------------------------------------------------------------------
# MIL variables -> numpy
# --------------------------------------------------------------------------


def _np_dtype(var: Any) -> np.dtype | None:
    """numpy dtype a MIL var declares (None for strings and lists; a state's element dtype)."""
    from coremltools.converters.mil.mil import types

    dtype = getattr(var, "dtype", None)
    if dtype is None or types.is_str(dtype):
        return None
    try:
        return np.dtype(types.nptype_from_builtin(dtype))
    except (TypeError, KeyError, ValueError):
        return None


def _is_state(var: Any) -> bool:
    from coremltools.converters.mil.mil.types.type_state import is_state

    return is_state(var.sym_type)


def _static_shape(var: Any) -> tuple[int, ...] | None:
    shape = getattr(var, "shape", None)
    if shape is None or not all(isinstance(d, (int, np.integer)) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _to_external(value: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    return np.array(value, dtype=dtype) if dtype is not None else np.array(value)


def _const_value(var: Any) -> Any:
    val = var.val
    if isinstance(val, np.ndarray) and val.dtype == np.float16:
        return val.astype(np.float32)
    if isinstance(val, np.float16):
        return np.float32(val)
    return val


def _walk_ops(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk_ops(inner)


def _is_constant(op: Any) -> bool:
    return op.op_type == "const" or (bool(op.outputs) and all(getattr(o, "val", None) is not None for o in op.outputs))


def _materialise(op: Any) -> tuple[Any, ...]:
    if all(o.val is not None for o in op.outputs):
        return tuple(o.val for o in op.outputs)
    vals = op.materialized_val_inference()
    return tuple(vals) if isinstance(vals, (tuple, list)) else (vals,)


def _arg_names(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(v.name for v in value)
    return value.name


def _blockwise(op: Any, pool: WeightPool) -> Blockwise | None:
    """A ``constexpr_blockwise_shift_scale`` over constant inputs, kept compressed in ``pool``."""
    if op.op_type != "constexpr_blockwise_shift_scale" or op.data.val is None or op.scale.val is None:
        return None
    offset = None if op.offset is None else op.offset.val
    return Blockwise(op.data.val, op.scale.val, offset, _np_dtype(op.outputs[0]), pool)


def _preserves_values(op: Any, out_dtypes: tuple[np.dtype | None, ...]) -> bool:
    """``op`` only moves values, and its data arguments (a state by its element dtype) already have
    the dtype of all its outputs."""
    keys = VALUE_PRESERVING.get(op.op_type)
    if keys is None or len(set(out_dtypes)) != 1 or out_dtypes[0] is None:
        return False
    data = [v for key in keys for v in _as_list(op.inputs.get(key))]
    return bool(data) and all(_np_dtype(v) == out_dtypes[0] for v in data)


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _resolve(value: Any) -> Any:
    return value.materialise() if isinstance(value, Blockwise) else value


class Program:
    """A loaded ML Program function, ready to run on numpy inputs.

    A stateful program (iOS18 states) runs with ``run(inputs, state=program.new_state())``;
    the same :class:`State` passed to successive calls carries the values between them.
    """

    def __init__(self, function: Any, pool: WeightPool | None = None) -> None:
        self._pool = WeightPool() if pool is None else pool
        tensors = {n: v for n, v in function.inputs.items() if not _is_state(v)}
        self._inputs = {name: (_np_dtype(var), var.shape) for name, var in tensors.items()}
        self.input_names: list[str] = list(self._inputs)
        self.input_shapes: dict[str, tuple[Any, ...]] = {n: tuple(shape) for n, (_, shape) in self._inputs.items()}
        self.state_specs: dict[str, StateSpec] = {
            name: StateSpec(_np_dtype(var), tuple(int(d) for d in var.shape))
            for name, var in function.inputs.items() if _is_state(var)}
        self.output_names: list[str] = [v.name for v in function.outputs]
        self._output_dtypes = [_np_dtype(v) for v in function.outputs]
        self._consts: dict[str, Any] = {}
        self._steps: list[Step] = []
        self.op_types: frozenset[str] = frozenset(op.op_type for op in _walk_ops(function))
        known = supported_ops()
        self._unsupported = tuple(sorted({op.op_type for op in _walk_ops(function)
                                          if not _is_constant(op) and op.op_type not in known}))
        if not self._unsupported:
            for op in function.operations:
                self._add_op(op)
            # keep only what the steps read: the inputs of constexpr ops are consts of their own
            read = {n for step in self._steps for _, v in step.args for n in ((v,) if isinstance(v, str) else v)}
            self._consts = {k: v for k, v in self._consts.items() if k in read or k in self.output_names}
        fp16 = any(_np_dtype(o) == np.float16 for op in function.operations if not _is_constant(op) for o in op.outputs)
        self.compute_precision: str = "float16" if fp16 else "float32"

    def _add_op(self, op: Any) -> None:
        if (lazy := _blockwise(op, self._pool)) is not None:
            self._consts[op.outputs[0].name] = lazy
            return
        if op.op_type in CONSTANT_OPS and op.op_type != "const":
            values = _materialise(op)
        elif _is_constant(op):
            values = tuple(_const_value(o) for o in op.outputs)
        else:
            args = tuple((k, _arg_names(v)) for k, v in op.inputs.items())
            out_dtypes = tuple(_np_dtype(o) for o in op.outputs)
            self._steps.append(
                Step(
                    op_type=op.op_type,
                    name=op.name,
                    kernel=KERNELS[op.op_type][0],
                    args=args,
                    out_names=tuple(o.name for o in op.outputs),
                    out_dtypes=out_dtypes,
                    out_shapes=tuple(_static_shape(o) for o in op.outputs),
                    rounded=_preserves_values(op, out_dtypes),
                    lazy=any(not isinstance(v, str) or isinstance(self._consts.get(v), Blockwise) for _, v in args),
                )
            )
            return
        for var, value in zip(op.outputs, values):
            self._consts[var.name] = to_compute(value, _np_dtype(var))

    def unsupported_ops(self) -> tuple[str, ...]:
        """Sorted op types in the program that have no kernel here."""
        return self._unsupported

    def new_state(self) -> State:
        """Zero-filled states for a new stream of calls, as Core ML's ``MLModel.makeState()``
        allocates them (empty for a stateless program, which then ignores it, as Core ML does)."""
        return State(self.state_specs)

    def _prepare_input(self, name: str, value: Any) -> np.ndarray:
        dtype, shape = self._inputs[name]
        arr = np.asarray(value)
        if len(shape) != arr.ndim or any(isinstance(d, (int, np.integer)) and d != n for d, n in zip(shape, arr.shape)):
            raise ValueError(f"input {name!r}: expected shape {tuple(shape)}, got {arr.shape}")
        return to_compute(arr if dtype is None else arr.astype(dtype), dtype)

    def run(self, inputs: Mapping[str, np.ndarray], state: State | None = None) -> dict[str, np.ndarray]:
        """Evaluate the function on ``inputs``; outputs keep the model's declared dtypes.

        ``state`` is required for a stateful program and updated in place by its
        ``coreml_update_state`` ops."""
        if self._unsupported:
            raise UnsupportedOps(self._unsupported)
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self._inputs]
        if missing or unknown:
            raise ValueError(f"inputs: missing {missing}, unknown {unknown}")
        if self.state_specs and state is None:
            raise ValueError("a stateful program needs state=program.new_state()")
        env = dict(self._consts)
        for name in self.input_names:
            env[name] = self._prepare_input(name, inputs[name])
        for name in self.state_specs:
            env[name] = state.slot(name)
        with np.errstate(all="ignore"):
            for step in self._steps:
                self._execute(step, env)
        return {name: _to_external(env[name], dtype) for name, dtype in zip(self.output_names, self._output_dtypes)}

    @staticmethod
    def _execute(step: Step, env: dict[str, Any]) -> None:
        if step.lazy:
            a = {k: _resolve(env[v]) if isinstance(v, str) else [_resolve(env[n]) for n in v] for k, v in step.args}
        else:
            a = {k: env[v] for k, v in step.args}
        try:
            out = step.kernel(a, step)
        except Exception as exc:
            raise RuntimeError(f"MIL op {step.op_type} ({step.name!r}) failed: {exc}") from exc
        if step.rounded:
            if isinstance(out, tuple):
                env.update(zip(step.out_names, out))
            else:
                env[step.out_names[0]] = out
            return
        outs = out if isinstance(out, tuple) else (out,)
        for name, dtype, value in zip(step.out_names, step.out_dtypes, outs):
            env[name] = to_compute(value, dtype)


def load(mlpackage_path: str | os.PathLike, function: str = "main") -> Program:
    """Parse a saved ML Program (.mlpackage) once, for repeated :meth:`Program.run`.

    ``function`` picks one function of a multifunction package (e.g. prefill / decode)."""
    return load_functions(mlpackage_path, (function,))[function]


def load_functions(mlpackage_path: str | os.PathLike, functions: Sequence[str]) -> dict[str, Program]:
    """Several functions of one package, parsed once and sharing their compressed weights."""
    ct = coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    path = os.fspath(mlpackage_path)
    with quiet():
        model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path} is not an ML Program (type {spec.WhichOneof('Type')!r})")
    weights_dir = model.weights_dir or os.path.join(path, "Data", "com.apple.CoreML", "weights")
    with quiet():
        program = milproto_load(spec, spec.specificationVersion, file_weights_dir=weights_dir)
    missing = [f for f in functions if f not in program.functions]
    if missing:
        raise ValueError(f"{path}: no function {missing[0]!r} in the ML Program "
                         f"(has {', '.join(sorted(program.functions))})")
    pool = WeightPool()
    return {name: Program(program.functions[name], pool) for name in functions}
