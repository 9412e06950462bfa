"""PT2E quantize/dequantize ops (``quantized_decomposed``, what ``convert_pt2e`` leaves) as
Core AI's own ``coreai::quantize`` / ``coreai::dequantize``, which coreai-torch lowers.

coreai-torch 0.4.3 has no lowering for ``quantized_decomposed`` (and the user's graph is
carried as it is, never re-quantized), so each op is replaced by the Core AI op computing
the same: ``clip(round(x / scale) + zero_point)`` and ``scale * (q - zero_point)``. Core AI
clips to the whole integer type; a narrower PT2E range (``[-127, 127]``) becomes a clamp of
``x`` to the values that quantize inside it, which rounds to the same codes.
"""

from __future__ import annotations

from typing import Any

OPS = ("quantized_decomposed.quantize_per_tensor.default", "quantized_decomposed.dequantize_per_tensor.default",
       "quantized_decomposed.dequantize_per_channel.default")


def has_pt2e_ops(program: Any) -> bool:
    return any(str(n.target) in OPS for n in program.graph.nodes if n.op == "call_function")


def as_coreai_ops(program: Any) -> Any:
    """The program's module with every PT2E quantize/dequantize op as its Core AI op (a
    GraphModule: the caller exports it again, with the declared dynamic dimensions)."""
    import coreai_torch._compression.custom_layers  # noqa: F401 - registers torch.ops.coreai.*
    import torch

    module = program.module()
    graph = module.graph
    count = 0

    def constant(value: Any, dtype: Any) -> Any:
        nonlocal count
        name = f"_coreai_qparam_{count}"
        count += 1
        module.register_buffer(name, torch.as_tensor(value, dtype=dtype).reshape(-1).clone())
        return graph.get_attr(name)

    for node in list(graph.nodes):
        kind = str(node.target)
        if node.op != "call_function" or kind not in OPS:
            continue
        with graph.inserting_before(node):
            if kind.endswith("dequantize_per_channel.default"):
                q, scale, zero_point, axis, _, _, dtype = node.args
                zp = graph.call_method("to", (zero_point, dtype))
                new = graph.call_function(torch.ops.coreai.dequantize.default, (q, graph.call_method(
                    "to", (scale, torch.float32))), {"zero_point": zp, "axis": axis})
            elif kind.endswith("dequantize_per_tensor.default"):
                q, scale, zero_point, _, _, dtype = node.args
                new = graph.call_function(torch.ops.coreai.dequantize.default, (
                    q, constant(scale, torch.float32)), {"zero_point": constant(zero_point, dtype)})
            else:
                x, scale, zero_point, qmin, qmax, dtype = node.args
                info = torch.iinfo(dtype)
                if (qmin, qmax) != (info.min, info.max):
                    x = graph.call_function(torch.ops.aten.clamp.default,
                                            (x, (qmin - zero_point) * scale, (qmax - zero_point) * scale))
                new = graph.call_function(torch.ops.coreai.quantize.default, (
                    x, constant(scale, torch.float32), dtype), {"zero_point": constant(zero_point, dtype)})
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    module.recompile()
    return module
