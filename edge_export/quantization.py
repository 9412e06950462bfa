"""Quantization mechanisms shared by the exporters (each backend's schemes.py decides
*what* to quantize; this module holds *how* PT2E is driven and calibrated)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

FIRST, LAST = "@first", "@last"  # recipe tokens: the first / last weighted layer
WEIGHTED_OPS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d",
                          "conv_transpose2d", "conv_transpose3d", "linear", "addmm", "mm"})


def run_pt2e(program: Any, quantizer: Any, calibration: Sequence[tuple[Any, ...]]) -> Any:
    """prepare → calibrate (one sample at a time: exported graphs are batch-specialised)
    → convert. Returns the quantized GraphModule, also the PyTorch fidelity reference."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for sample in calibration:
            prepared(*sample)
    return convert_pt2e(prepared)


def module_names(node: Any) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _type in stack.values()]


def weighted_layers(graph_module: Any) -> list[str]:
    """Module paths of conv/linear layers, in graph order (for @first / @last)."""
    found: list[str] = []
    for node in graph_module.graph.nodes:
        parts = str(node.target).split(".")  # e.g. aten.conv2d.default
        if node.op != "call_function" or len(parts) < 2 or parts[1] not in WEIGHTED_OPS:
            continue
        names = [n for n in module_names(node) if n]  # "" is the root: it would match all
        if names and names[-1] not in found:
            found.append(names[-1])
    return found


def keep_float_filter(patterns: Sequence[str], graph_module: Any) -> Callable[[Any], bool] | None:
    """A node filter that is False for nodes inside modules matched by ``patterns``
    (fnmatch on module paths, plus @first/@last), so those layers stay in float."""
    if not patterns:
        return None
    layers = weighted_layers(graph_module)
    resolved = []
    for pattern in patterns:
        if pattern == FIRST and layers:
            resolved.append(layers[0])
        elif pattern == LAST and layers:
            resolved.append(layers[-1])
        elif pattern not in (FIRST, LAST):
            resolved.append(pattern)

    def quantize_node(node: Any) -> bool:
        return not any(fnmatch.fnmatchcase(name, pat) for name in module_names(node)
                       for pat in resolved)

    return quantize_node


def torch_callable(module: Any) -> Callable[..., Any]:
    """Run a quantized reference without grad (convert_pt2e outputs refuse .eval())."""
    import torch

    def run(*args: Any) -> Any:
        with torch.no_grad():
            return module(*args)

    return run
