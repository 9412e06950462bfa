"""coremltools translations for core ATen ops it lacks and no decomposition removes.

Core ATen has no smaller ops for these (``bitwise_or`` on masks, ``isinf``, ``trunc``,
``fmod``, ``prod`` over a dim), so ``decompose_for_coreml`` would hand them to
coremltools 9 as they are and conversion would stop at "Unsupported fx node". Each is
registered only under names coremltools does not translate itself, so an upgrade that
adds its own translation takes over. Importing this module registers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend.torch.ops import _get_inputs
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op
from coremltools.converters.mil.mil import types

Translation = Callable[[Any, Any], None]


def _translation(*names: str) -> Callable[[Translation], Translation]:
    def register(fn: Translation) -> Translation:
        missing = [n for n in names if n not in _TORCH_OPS_REGISTRY]
        if missing:
            fn.__name__ = missing[0]  # coremltools keys a translation by its function name
            register_torch_op(fn, torch_alias=missing[1:])
        return fn

    return register


def _bool_only(node: Any, inputs: list[Any]) -> None:
    if not all(types.is_bool(v.dtype) for v in inputs):
        raise NotImplementedError(f"{node.kind} on integer tensors: Core ML has no bitwise integer ops")


@_translation("bitwise_or")
def _bitwise_or(context: Any, node: Any) -> None:
    x, y = _get_inputs(context, node, expected=2)
    _bool_only(node, [x, y])
    context.add(mb.logical_or(x=x, y=y, name=node.name))


@_translation("bitwise_xor")
def _bitwise_xor(context: Any, node: Any) -> None:
    x, y = _get_inputs(context, node, expected=2)
    _bool_only(node, [x, y])
    context.add(mb.logical_xor(x=x, y=y, name=node.name))


@_translation("isinf")
def _isinf(context: Any, node: Any) -> None:
    (x,) = _get_inputs(context, node, expected=1)
    context.add(mb.equal(x=mb.abs(x=x), y=np.float32(np.inf), name=node.name))


def _trunc_var(x: Any, name: str | None = None) -> Any:
    """Round toward zero: sign(x) * floor(|x|) (MIL has floor, ceil and round only)."""
    kwargs = {"name": name} if name else {}
    return mb.mul(x=mb.sign(x=x), y=mb.floor(x=mb.abs(x=x)), **kwargs)


@_translation("edge_export::output_copy")
def _output_copy(context: Any, node: Any) -> None:
    """An output of its own (decompositions.materialise_outputs): never eliminated at a block output."""
    (x,) = _get_inputs(context, node, expected=1)
    context.add(mb.identity(x=x, name=node.name))


@_translation("trunc")
def _trunc(context: Any, node: Any) -> None:
    (x,) = _get_inputs(context, node, expected=1)
    context.add(_trunc_var(x, node.name))


@_translation("fmod")
def _fmod(context: Any, node: Any) -> None:
    """C fmod: the remainder takes the dividend's sign, x - trunc(x / y) * y."""
    x, y = _get_inputs(context, node, expected=2)
    if types.is_int(x.dtype):
        x = mb.cast(x=x, dtype="fp32")
    quotient = _trunc_var(mb.real_div(x=x, y=y))
    context.add(mb.sub(x=x, y=mb.mul(x=quotient, y=y), name=node.name))


@_translation("prod", "prod.dim_int")
def _prod(context: Any, node: Any) -> None:
    inputs = _get_inputs(context, node, min_expected=1)
    if node.kind != "prod.dim_int":  # prod(x, dtype): every element
        context.add(mb.reduce_prod(x=inputs[0], name=node.name))
        return
    keep = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2].val)  # prod.dim_int(x, dim, keepdim)
    context.add(mb.reduce_prod(x=inputs[0], axes=[int(inputs[1].val)], keep_dims=keep, name=node.name))
