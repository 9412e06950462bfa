"""ATen decompositions for coremltools: decompose exactly what it cannot convert.

``ExportedProgram.run_decompositions({})`` keeps ops such as ``new_ones``, ``diff`` and
``alias`` that every transformers text model emits and that coremltools 9 has no
translation for; the full core-ATen table instead would also split ops Core ML runs as
one fused kernel (``scaled_dot_product_attention``, ``layer_norm``, ``gelu``, ``linear``,
convolutions, upsampling). The table built here is the core-ATen table minus every op
coremltools' torch frontend registers, so it is derived from the installed coremltools
rather than from a hand list that goes stale. ``alias`` nodes that survive (an identity
in a functional graph) are removed afterwards. Core ATen ops that coremltools lacks and
that have no decomposition get a translation in :mod:`.translations`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["coreml_decomposition_table", "decompose_for_coreml", "remove_aliases"]


def coremltools_converts(op: Any) -> bool:
    """True when coremltools' torch frontend has a translation for this ATen overload."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind

    return sanitize_op_kind(op.name()) in _TORCH_OPS_REGISTRY


def coreml_decomposition_table() -> Any:
    """The core-ATen decomposition table without the ops coremltools converts natively."""
    import torch

    from . import translations  # noqa: F401  (registers ours, so those ops are kept too)

    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if coremltools_converts(op):
            table.pop(op)
    return table


def remove_aliases(program: Any) -> Any:
    """Drop ``aten.alias`` nodes: in a functional graph they are identities, and
    coremltools has no translation for them (stateful programs keep one per buffer read)."""
    import torch

    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (torch.ops.aten.alias.default,
                                                           torch.ops.aten.alias_copy.default):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.lint()
    program.graph_module.recompile()
    return program


def decompose_for_coreml(program: Any) -> Any:
    """``program`` lowered to ATen ops that coremltools 9 converts."""
    return remove_aliases(program.run_decompositions(coreml_decomposition_table()))
