"""Which ATen ops of a program litert-torch has no lowering for."""

from __future__ import annotations

from typing import Any


def not_lowerable(program: Any) -> list[str]:
    """Ops left after litert-torch's own pre-conversion and pre-lowering decompositions that
    its lowering registry does not know (each one stops the conversion)."""
    import operator

    from litert_torch import fx_infra
    from litert_torch.backend import lowerings

    decomposed = fx_infra.safe_run_decompositions(
        program, fx_infra.decomp.pre_convert_decomp() | fx_infra.decomp.pre_lower_decomp())
    missing = set()
    for node in decomposed.graph.nodes:
        if node.op == "call_function" and node.target is not operator.getitem \
                and lowerings.lookup(node.target) is None:
            missing.add(getattr(node.target, "__name__", str(node.target)).removesuffix(".default"))
    return sorted(missing)
