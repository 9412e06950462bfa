"""Graph rewrites for ops litert-torch lowers to TFLite kernels that refuse their dtype.

LiteRT's ``ARG_MAX``/``ARG_MIN`` take float, int8/uint8, int32 and bool inputs, not int64,
and litert-torch 0.10 lowers ``argmax`` over int64 tensors to a ``tfl.arg_max`` on i64 that
its converter passes then refuse ("failed to legalize operation 'tfl.arg_max' that was
explicitly marked illegal"). CLIP-style text towers pool exactly so:
``x[torch.arange(B), input_ids.argmax(dim=-1)]`` over int64 token ids. The rewrite casts
the operand to int32 first: exact for token ids and every value within int32, and no loss
at all for the model's own inputs, which LiteRT feeds as int32 anyway (litert-torch downcasts
64-bit model I/O). Parity gates the result like any other artifact.
"""

from __future__ import annotations

from typing import Any

__all__ = ["rewrite_for_litert"]


def rewrite_for_litert(module: Any) -> Any:
    """``module`` (a GraphModule) with int64 arg-reductions taking an int32 cast of their operand."""
    import torch

    aten = torch.ops.aten
    graph = module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.argmax.default, aten.argmin.default):
            continue
        operand = node.args[0]
        value = operand.meta.get("val") if isinstance(operand, torch.fx.Node) else None
        if not isinstance(value, torch.Tensor) or value.dtype != torch.int64:
            continue
        with graph.inserting_before(node):
            cast = graph.call_function(aten._to_copy.default, (operand,), {"dtype": torch.int32})
        cast.meta["val"] = value.to(torch.int32)
        node.replace_input_with(operand, cast)
        changed = True
    if changed:
        graph.lint()
        module.recompile()
    return module
