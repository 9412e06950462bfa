"""ATen decompositions that keep transformer blocks inside the XNNPACK delegate.

XNNPACK's partitioner (executorch 1.5) has no config for ``native_layer_norm``,
``mul.Scalar`` or ``expand_copy``, and the core-ATen decomposition of
``scaled_dot_product_attention`` emits ``mul.Scalar`` scaling, shape-preserving
``expand_copy`` nodes and the "safe softmax" guard (``eq``/``logical_not``/``any``/``where``).
Every such op runs on ExecuTorch's portable kernels, cutting each transformer block
into several small delegate segments with portable ops in between: measured 1.5-3x
slower than LiteRT on the same blocks (docs/LATENCY.md). Before lowering, those ops
are rewritten here into ones XNNPACK takes:

- layer norm (and RMSNorm's last-dim mean): mean and variance as a ``linear`` with a constant 1/N weight row (XNNPACK's
  ``mean.dim`` only reduces the two inner dims of 4-D tensors), then sub, mul, rsqrt, add;
- attention: ``bmm`` on (batch*heads, L, E) views, the scale as ``mul.Tensor``, the mask
  added (a boolean mask becomes an additive one), ``softmax``, ``bmm``;
- ``mul.Scalar`` as ``mul.Tensor``, ``x ** 3`` (GPT-2's GELU) as multiplies, splits as slices,
  ``select`` and ``squeeze`` (from ``unbind``, ``x[:, 0]``) as slices and views.

A rewrite that does not apply (another dtype or shape) returns ``NotImplemented``: the op
stays as it was. The constants these create (the 1/N row, a causal mask) are folded into the program by
ExecuTorch's ``constant_prop_pass``, so XNNPACK sees them as static weights. A fully
masked attention row gives NaN here where the safe softmax gives zeros (as eager
``scaled_dot_product_attention`` with a float mask does); parity gates every export.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["collapse_output_copies", "decompose_for_xnnpack", "xnnpack_decomposition_table"]

QUANT_NAMESPACES = ("quantized_decomposed", "torchao")


def _layer_norm(x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
                eps: float = 1e-5) -> tuple[Any, Any, Any]:
    import torch

    aten = torch.ops.aten
    if len(normalized_shape) != 1 or not x.dtype.is_floating_point:
        return NotImplemented  # the op as it is
    n = normalized_shape[0]
    row = torch.full((1, n), 1.0 / n, dtype=x.dtype)  # folded into a constant weight
    mean = aten.linear.default(x, row)
    centered = x - mean
    var = aten.linear.default(centered * centered, row)
    rstd = torch.rsqrt(var + eps)
    out = centered * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


def _mean_dim(x: Any, dim: Any, keepdim: bool = False, *, dtype: Any = None) -> Any:
    """A mean over the last dimension (RMSNorm's) as a ``linear`` with a 1/N row; other
    means keep the default (XNNPACK takes 4-D means over the two inner dims)."""
    import torch

    aten = torch.ops.aten
    dims = [dim] if isinstance(dim, int) else list(dim or [])
    n = x.shape[-1] if x.dim() else None
    if (len(dims) != 1 or dims[0] % max(x.dim(), 1) != x.dim() - 1 or dtype is not None
            or not x.dtype.is_floating_point or not isinstance(n, int) or x.dim() == 4):
        return NotImplemented
    mean = aten.linear.default(x, torch.full((1, n), 1.0 / n, dtype=x.dtype))
    return mean if keepdim else mean.reshape(x.shape[:-1])


def _layer_norm_composite(x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
                          eps: float = 1e-5, cudnn_enable: bool = True) -> Any:
    out = _layer_norm(x, normalized_shape, weight, bias, eps)
    return out if out is NotImplemented else out[0]


def _sdpa(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0,
          is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
    import torch

    aten = torch.ops.aten
    if (dropout_p != 0.0 or enable_gqa or q.dim() != 4 or k.dim() != 4
            or not q.dtype.is_floating_point or (is_causal and attn_mask is not None)):
        return NotImplemented
    b, h, length, e = q.shape
    s = k.shape[2]
    scale = 1.0 / math.sqrt(e) if scale is None else scale
    q3 = q.reshape(b * h, length, e)
    k3 = k.reshape(b * h, s, e).permute(0, 2, 1)
    v3 = v.reshape(b * h, s, v.shape[-1])
    scores = aten.bmm.default(q3, k3).reshape(b, h, length, s)
    scores = aten.mul.Tensor(scores, scale)
    if is_causal:
        attn_mask = torch.full((length, s), float("-inf"), dtype=q.dtype).triu(1)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.where(attn_mask, 0.0, float("-inf")).to(q.dtype)
        scores = scores + attn_mask
    probs = torch.softmax(scores, dim=-1).reshape(b * h, length, s)
    return aten.bmm.default(probs, v3).reshape(b, h, length, v.shape[-1])


def _mul_scalar(x: Any, other: Any) -> Any:
    import torch

    return torch.ops.aten.mul.Tensor(x, other)


def _pow_scalar(x: Any, exponent: Any) -> Any:
    """Small integer powers as multiplies (XNNPACK takes only ``x ** 2``; GPT-2's GELU
    has ``x ** 3``)."""
    import torch

    aten = torch.ops.aten
    if (not x.dtype.is_floating_point or float(exponent) != int(exponent)
            or not 2 <= int(exponent) <= 4):
        return NotImplemented
    out = aten.mul.Tensor(x, x)
    for _ in range(int(exponent) - 2):
        out = aten.mul.Tensor(out, x)
    return out


def _split_with_sizes(x: Any, sizes: Any, dim: int = 0) -> list[Any]:
    """Splits as slices (XNNPACK has a slice, no split; GPT-2 splits q, k, v)."""
    import torch

    out, start = [], 0
    for size in sizes:
        out.append(torch.ops.aten.slice.Tensor(x, dim, start, start + size))
        start += size
    return out


def _split(x: Any, split_size: int, dim: int = 0) -> list[Any]:
    length = x.shape[dim]
    sizes = [min(split_size, length - start) for start in range(0, length, split_size)]
    return _split_with_sizes(x, sizes or [length], dim)


def _squeeze_dims(x: Any, dims: Any) -> Any:
    """Squeezes as views (XNNPACK takes views, not squeeze copies; ``unbind`` makes them)."""
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = {d % x.dim() for d in dims} if x.dim() else set()
    return x.reshape([n for i, n in enumerate(x.shape) if not (i in dims and n == 1)])


def _select(x: Any, dim: int, index: int) -> Any:
    """``x[..., i, ...]`` as a slice and a view (no select in XNNPACK)."""
    import torch

    dim = dim % x.dim()
    index = index % x.shape[dim] if isinstance(index, int) else index
    part = torch.ops.aten.slice.Tensor(x, dim, index, index + 1)
    return part.reshape([n for i, n in enumerate(x.shape) if i != dim])


def _unbind(x: Any, dim: int = 0) -> list[Any]:
    return [_select(x, dim, i) for i in range(x.shape[dim])]


def xnnpack_decomposition_table() -> dict[Any, Any]:
    """Only the rewrites above: every other op is left to ``to_edge_transform_and_lower``,
    which keeps the ones the partitioner lowers whole (``linear``, ...)."""
    import torch

    aten = torch.ops.aten
    return {aten.native_layer_norm.default: _layer_norm,
            aten.layer_norm.default: _layer_norm_composite,
            aten.scaled_dot_product_attention.default: _sdpa,
            aten.mean.dim: _mean_dim,
            aten.mul.Scalar: _mul_scalar,
            aten.pow.Tensor_Scalar: _pow_scalar,
            aten.split.Tensor: _split,
            aten.split_with_sizes.default: _split_with_sizes,
            aten.squeeze.dims: _squeeze_dims,
            aten.squeeze.dim: _squeeze_dims,
            aten.select.int: _select,
            aten.unbind.int: _unbind}


def decompose_for_xnnpack(program: Any) -> Any:
    """``program`` in core ATen with layer norm and attention in XNNPACK-delegable ops."""
    import torch
    from executorch.exir.passes.constant_prop_pass import (
        _DEFAULT_SKIP_TARGETS,
        _QUANT_PRIMITIVES,
        constant_prop_pass,
    )

    program = collapse_output_copies(program)
    table = xnnpack_decomposition_table()
    if not any(node.target in table for node in program.graph.nodes):
        return program  # nothing to rewrite (most CNNs): no re-trace, no constant folding
    decomposed = program.run_decompositions(table)
    # Quantized weights must stay (int weight -> dequantize) for XNNPACK's quantized
    # kernels: never fold a quantization primitive, PT2E's or torchao's.
    skip = set(_DEFAULT_SKIP_TARGETS) | set(_QUANT_PRIMITIVES) | {
        node.target for node in decomposed.graph.nodes
        if getattr(node.target, "namespace", None) in QUANT_NAMESPACES}
    folded = constant_prop_pass(decomposed, custom_skip_targets=skip)
    if _constant_bytes(folded) > _constant_bytes(program) + max(1 << 20, _constant_bytes(program) // 20):
        return program  # folding materialised big tensors (a full-size mask): not worth the bytes
    for name, value in folded.constants.items():  # lowering deep-copies constants: no grad
        if isinstance(value, torch.Tensor) and value.requires_grad:
            folded.constants[name] = value.detach()
    return folded


def collapse_output_copies(program: Any) -> Any:
    """Outputs that copy a computed tensor (``y`` and ``y.clone()``) return that tensor itself.

    XNNPACK's preprocessing drops identity copies inside a delegated subgraph, so the copy
    and its source become one node listed twice among the subgraph's outputs, and lowering
    stops at "Output node ... is already in the inputs ... pass through arguments".
    ExecuTorch itself returns one value at several output positions (as for ``return y, y``).
    A copy of a graph input stays: XNNPACK keeps input-to-output copies."""
    from edge_export.load.adapt import copied_from, replace_outputs, user_output_positions

    outputs = program.graph_module.graph.output_node().args[0]
    sources = {i: copied_from(outputs[i]) for i in user_output_positions(program)}
    return replace_outputs(program, {i: source for i, source in sources.items()
                                     if source is not outputs[i] and source.op != "placeholder"})


def _constant_bytes(program: Any) -> int:
    import torch

    tensors = [*program.state_dict.values(), *program.constants.values()]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
