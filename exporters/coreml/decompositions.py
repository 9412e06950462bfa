"""ATen decompositions for coremltools: decompose exactly what it cannot convert.

``ExportedProgram.run_decompositions({})`` keeps ops such as ``new_ones``, ``diff`` and
``alias`` that every transformers text model emits and that coremltools 9 has no
translation for; the full core-ATen table instead would also split ops Core ML runs as
one fused kernel (``scaled_dot_product_attention``, ``layer_norm``, ``gelu``, ``linear``,
convolutions, upsampling). The table built here is the core-ATen table minus every op
coremltools' torch frontend registers, so it is derived from the installed coremltools
rather than from a hand list that goes stale. ``alias`` nodes that survive (an identity
in a functional graph) are removed afterwards. Core ATen ops that coremltools lacks and
that have no decomposition get a translation in :mod:`.translations`. Outputs that hand a
graph input or another output on unchanged get a copy of their own (:func:`materialise_outputs`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["coreml_decomposition_table", "decompose_for_coreml", "materialise_outputs", "remove_aliases"]

OUTPUT_COPY = "edge_export::output_copy"


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


def output_copy_op() -> Any:
    """``edge_export::output_copy``: a copy that coremltools translates to a MIL ``identity``
    (:mod:`.translations`), defined once per process."""
    import torch

    namespace, name = OUTPUT_COPY.split("::")
    if not hasattr(getattr(torch.ops, namespace), name):
        output_copy = torch.library.custom_op(OUTPUT_COPY, lambda x: x.clone(), mutates_args=(),
                                              schema="(Tensor x) -> Tensor")
        output_copy.register_fake(lambda x: torch.empty_like(x))
    return getattr(getattr(torch.ops, namespace), name).default


def materialise_outputs(program: Any) -> Any:
    """Give every output that is a graph input, or the same tensor as an earlier output, a
    copy of its own.

    coremltools translates copies (``clone``, ``alias``) to nothing and names each output by
    renaming the variable that computes it: an output that is an input stops conversion
    ("Main block's input name, 'x', is different from its corresponding var's name"), and a
    tensor returned twice ends up with the last name at both positions (the first name lost).
    A MIL ``identity`` at a block output is never eliminated, so each output keeps its name."""
    from edge_export.load.adapt import give_outputs_own_values

    return give_outputs_own_values(program, output_copy_op(), inputs_too=True)


def decompose_for_coreml(program: Any) -> Any:
    """``program`` lowered to ATen ops that coremltools 9 converts, every output its own
    variable."""
    return materialise_outputs(remove_aliases(program.run_decompositions(coreml_decomposition_table())))
