"""Quantization mechanisms shared by the exporters (each backend's schemes.py decides
*what* to quantize; this module holds *how* PT2E is driven and calibrated)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

FIRST, LAST = "@first", "@last"  # recipe tokens: the first / last weighted layer
AUTO = "auto"  # keep_float = "auto": the job picks the layers from measured sensitivity
WEIGHTED_OPS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d",
                          "conv_transpose2d", "conv_transpose3d", "linear", "addmm", "mm"})


def run_pt2e(program: Any, quantizer: Any, calibration: Sequence[tuple[Any, ...]]) -> Any:
    """prepare → calibrate (one sample at a time: exported graphs are batch-specialised)
    → convert. Returns the quantized GraphModule, also the PyTorch fidelity reference."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    _keep_integer_scalars(quantizer)
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for sample in calibration:
            prepared(*sample)
    return convert_pt2e(prepared)


def _keep_integer_scalars(quantizer: Any) -> None:
    """XNNPACKQuantizer's transform_for_annotation turns every scalar operand of add/mul into a
    *float* tensor constant, integer arithmetic included: transformers' attention-mask
    building (``arange(n) + 0`` used as an index) then yields float indices and calibration
    fails with "tensors used as indices must be long, int, byte or bool tensors" (MiniLM
    int8-dynamic, issue 12). Cast those constants back to the integer dtype the op had."""
    import torch

    original = quantizer.transform_for_annotation
    if getattr(original, "_keeps_integer_scalars", False):
        return

    def transform(model: Any) -> Any:
        model = original(model)
        for node in model.graph.nodes:
            val = node.meta.get("val")
            if (node.op != "call_function" or not isinstance(val, torch.Tensor)
                    or val.is_floating_point() or val.is_complex()):
                continue
            for arg in node.args:
                if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and \
                        str(arg.target).startswith("_tensor_constant_"):
                    const = getattr(model, arg.target)
                    if const.is_floating_point():
                        model.register_buffer(arg.target, const.to(val.dtype))
                        fake = arg.meta.get("val")
                        if fake is not None:
                            arg.meta["val"] = fake.to(val.dtype)
        return model

    transform._keeps_integer_scalars = True  # type: ignore[attr-defined]
    quantizer.transform_for_annotation = transform


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
    resolved = _resolve_tokens(patterns, graph_module)

    def quantize_node(node: Any) -> bool:
        return not any(fnmatch.fnmatchcase(name, pat) for name in module_names(node)
                       for pat in resolved)

    return quantize_node


def _resolve_tokens(patterns: Sequence[str], graph_module: Any) -> list[str]:
    if isinstance(patterns, str):  # "auto" must have been resolved by the job
        raise ValueError(f"keep_float {patterns!r} reached a scheme unresolved")
    layers = weighted_layers(graph_module)
    resolved = []
    for pattern in patterns:
        if pattern == FIRST and layers:
            resolved.append(layers[0])
        elif pattern == LAST and layers:
            resolved.append(layers[-1])
        elif pattern not in (FIRST, LAST):
            resolved.append(pattern)
    return resolved


def module_stacks(graph_module: Any) -> dict[str, list[tuple[str, Any]]]:
    """Every module path of the graph → its nn_module_stack (root first), for backends
    that name layers by their module hierarchy (LiteRT tensor names)."""
    stacks: dict[str, list[tuple[str, Any]]] = {}
    for node in graph_module.graph.nodes:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        for depth, (path, _type) in enumerate(stack):
            if path and path not in stacks:
                stacks[path] = stack[:depth + 1]
    return stacks


def keep_float_modules(patterns: Sequence[str], graph_module: Any) -> list[str]:
    """The outermost module paths matched by ``patterns`` (@first/@last resolved): what a
    backend that configures quantization per module name must leave in float."""
    if not patterns:
        return []
    resolved = _resolve_tokens(patterns, graph_module)
    matched = [p for p in module_stacks(graph_module)
               if any(fnmatch.fnmatchcase(p, pat) for pat in resolved)]
    return [p for p in matched if not any(p.startswith(q + ".") for q in matched)]


def with_keep_float(recipe: Any, keep: Sequence[str]) -> Any:
    """The recipe with its ``keep_float`` replaced by ``keep`` (exact module paths)."""
    import dataclasses

    return dataclasses.replace(recipe, params={**recipe.params, "keep_float": list(keep)})


def torch_callable(module: Any) -> Callable[..., Any]:
    """Run a quantized reference without grad (convert_pt2e outputs refuse .eval())."""
    import torch

    def run(*args: Any) -> Any:
        with torch.no_grad():
            return module(*args)

    return run
