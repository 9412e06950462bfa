"""Skip XNNPACK pattern passes that cannot match, without changing what they produce.

Two of XNNPACK's passes (bilinear upsample, SDPA fusion) first build their pattern
graphs by exporting and lowering small modules — about 6 s of CPU per process, more
than lowering a small model itself. A pattern can only match a graph that contains
every op of the pattern, so when the graph lacks an op that every pattern of the pass
contains (its *anchor*), the pass is run with no patterns: same graph, same bytes.
``tests/test_performance_contract.py`` checks that each anchor is in every pattern.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

# (pass module, pass class, pattern module, pattern builder, anchor op, "no patterns" value)
PATTERN_PASSES = (
    ("executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d",
     "ConvertToUpsampleBilinear2d", "executorch.backends.xnnpack.partition.graphs.bilinear_2d",
     "get_graphs_dict", "aten::upsample_bilinear2d.vec", dict),
    ("executorch.backends.xnnpack._passes.convert_to_sdpa", "ConvertToSDPAPass",
     "executorch.backends.xnnpack.partition.graphs.sdpa", "get_graphs", "aten::_softmax", list),
)


def op_name(target: Any) -> str:
    """``aten::name.overload`` for ATen and Edge ops alike."""
    name = getattr(target, "name", None)
    return name() if callable(name) else str(target)


def has_op(graph_module: Any, anchor: str) -> bool:
    return any(node.op == "call_function" and op_name(node.target).startswith(anchor)
               for node in graph_module.graph.nodes)


@contextlib.contextmanager
def skip_unmatchable_patterns() -> Iterator[None]:
    """While active, the pattern passes build their patterns only for graphs with the anchor."""
    restore = []
    for pass_module, pass_name, pattern_module, builder, anchor, empty in PATTERN_PASSES:
        cls = getattr(importlib.import_module(pass_module), pass_name)
        patterns = importlib.import_module(pattern_module)
        original = cls.call

        def call(self: Any, graph_module: Any, original: Any = original, patterns: Any = patterns,
                 builder: str = builder, anchor: str = anchor, empty: type = empty) -> Any:
            if has_op(graph_module, anchor):
                return original(self, graph_module)
            build = getattr(patterns, builder)
            setattr(patterns, builder, empty)
            try:
                return original(self, graph_module)
            finally:
                setattr(patterns, builder, build)

        cls.call = call
        restore.append((cls, original))
    try:
        yield
    finally:
        for cls, original in restore:
            cls.call = original
