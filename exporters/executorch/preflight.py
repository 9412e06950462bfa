"""Which ops of a program XNNPACK would leave to ExecuTorch's portable CPU kernels."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .patterns import skip_unmatchable_patterns

NOT_OPS = ("executorch_call_delegate", "getitem")


def not_delegated(program: Any) -> list[str]:
    """Lower with the XNNPACK partitioner (as export does) and list the ops left outside a
    delegate, most frequent first: each one runs on slower portable kernels on the phone."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .decompositions import decompose_for_xnnpack

    with skip_unmatchable_patterns():
        edge = to_edge_transform_and_lower(decompose_for_xnnpack(program), partitioner=[XnnpackPartitioner()])
    left = Counter(_op_name(n.target) for n in edge.exported_program().graph.nodes
                   if n.op == "call_function" and not any(s in str(n.target) for s in NOT_OPS))
    return [f"{name} x{count}" for name, count in left.most_common()]


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", str(target))
    return name.removesuffix(".default").removeprefix("aten.")
