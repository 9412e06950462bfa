"""Which ATen ops of a program coremltools has no translation for."""

from __future__ import annotations

from typing import Any


def not_convertible(program: Any) -> list[str]:
    """The core-ATen ops after the decomposition lower() applies that are missing from
    coremltools' torch-op registry (each one stops the conversion)."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    decomposed = program.run_decompositions({})
    missing = set()
    for node in decomposed.graph.nodes:
        if node.op != "call_function" or not hasattr(node.target, "overloadpacket"):
            continue
        name = node.target.overloadpacket.__name__
        if name not in _TORCH_OPS_REGISTRY and name.rstrip("_") not in _TORCH_OPS_REGISTRY:
            missing.add(name)
    return sorted(missing)
