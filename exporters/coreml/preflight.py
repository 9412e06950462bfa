"""Which ATen ops of a program coremltools has no translation for."""

from __future__ import annotations

from typing import Any

from .decompositions import coremltools_converts, decompose_for_coreml


def not_convertible(program: Any) -> list[str]:
    """The ops left after the decomposition lower() applies that neither coremltools nor our
    translations convert (each one stops the conversion)."""
    decomposed = decompose_for_coreml(program)
    return sorted({node.target.name().removeprefix("aten::") for node in decomposed.graph.nodes
                   if node.op == "call_function" and hasattr(node.target, "name")
                   and not coremltools_converts(node.target)})
