"""Quantization mechanisms shared by the exporters (each backend's schemes.py decides
*what* to quantize; this module holds *how* PT2E is driven and calibrated)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from .calibrating import tracked

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
    prepared = prepare_pt2e(program.module() if hasattr(program, "module") else program, quantizer)
    with torch.no_grad():
        for sample in tracked(calibration, "calibrating"):
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


def kept_layers(patterns: Sequence[str], graph_module: Any) -> dict[str, list[str]]:
    """Each ``keep_float`` entry → the weighted layers (conv/linear module paths) it keeps
    float: the layers it matches, or whose ancestor module it matches. An entry that covers
    no weighted layer is refused: the recipes quantize only those, so it would keep nothing."""
    from edge_export.errors import UsageError

    if not patterns:
        return {}
    resolved = _resolve_tokens(patterns, graph_module)
    layers = weighted_layers(graph_module)
    covered: dict[str, list[str]] = {}
    for entry, pattern in zip((p for p in patterns if p not in (FIRST, LAST) or layers), resolved, strict=True):
        matched = [layer for layer in layers if any(fnmatch.fnmatchcase(prefix, pattern)
                                                    for prefix in _ancestors(layer))]
        if not matched:
            raise UsageError(f"keep_float entry {entry!r} matches no conv or linear layer of the model",
                             hint=f"its layers are {', '.join(layers[:6])}{', ...' if len(layers) > 6 else ''}")
        covered[entry] = matched
    return covered


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def check_kept_float(covered: dict[str, list[str]], still_float: Callable[[str], bool], target: str) -> None:
    """After quantization: every layer a ``keep_float`` entry covers must be float in what is
    lowered (``still_float`` reads the backend's own output), else the job fails naming the
    entry. Backends map module paths to their ops by names, and a mapping that misses a layer
    would otherwise quantize it silently while the recipe says it is float."""
    from edge_export.errors import UsageError

    for entry, layers in covered.items():
        quantized = [layer for layer in layers if not still_float(layer)]
        if quantized:
            raise UsageError(f"keep_float entry {entry!r} was not honoured on {target}: "
                             f"{', '.join(quantized)} stayed quantized")


def pt2e_float_layers(graph_module: Any) -> set[str]:
    """Weighted layers of a converted PT2E graph whose weights are not dequantized (float)."""
    float_layers, quantized = set(), set()
    for node in graph_module.graph.nodes:
        parts = str(node.target).split(".")
        if node.op != "call_function" or len(parts) < 2 or parts[1] not in WEIGHTED_OPS:
            continue
        names = [n for n in module_names(node) if n]
        if not names or len(node.args) < 2:
            continue
        weight = node.args[1]
        dequantized = "dequantize" in str(getattr(weight, "target", ""))
        (quantized if dequantized else float_layers).add(names[-1])
    return float_layers - quantized


def eager_float(module: Any, path: str) -> bool:
    """Is the layer at ``path`` of an eager module float after a source-level quantizer
    (torchao swaps a quantized weight for a tensor subclass)?"""
    import torch

    weight = getattr(module.get_submodule(path), "weight", None)
    return type(weight) in (torch.nn.Parameter, torch.Tensor)


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


# Ops whose weight is quantized per output channel, and that channel's axis in their output.
CORRECTED_OPS = {"aten.conv1d.default": 1, "aten.conv2d.default": 1, "aten.conv3d.default": 1,
                 "aten.linear.default": -1}


def channel_quantized(weight: Any, quant_range: tuple[int, int]) -> Any:
    """``weight`` through symmetric per-output-channel int quantization, as the backends do
    (scale = max|w| / ((qmax - qmin) / 2), round to nearest, clamp to the range)."""
    import torch

    qmin, qmax = quant_range
    flat = weight.reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / ((qmax - qmin) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    scale = scale.reshape((-1,) + (1,) * (weight.dim() - 1))
    return torch.clamp(torch.round(weight / scale), qmin, qmax) * scale


def bias_corrected(program: Any, calibration: Sequence[tuple[Any, ...]], quant_range: tuple[int, int],
                   quantize_node: Callable[[Any], bool] | None = None,
                   rounded: dict[str, Any] | None = None) -> Any:
    """Empirical bias correction (Nagel et al., "Data-Free Quantization", ICCV 2019, sec. 4.2).

    Rounding a layer's weights shifts the *mean* of each output channel by E[(W_q - W) x],
    which is not zero when the inputs are (post-ReLU activations are all positive): on
    EfficientNet-Lite0's first depthwise conv (3x3, weights up to 17 after BN folding) this
    alone cost the logits 16 dB. Measure the shift on the calibration data with the float
    activations and subtract it from the layer's bias (added when the layer has none; the
    BN that follows folds it). Weights are untouched, so the backend quantizes exactly the
    weights this measured. Returns a corrected copy of ``program.module()``.

    ``rounded`` (weight attribute -> float weights already on the backend's grid, from
    :mod:`.rounding`) replaces those weights in the copy; the shift is then measured for
    them against the original float weights.
    """
    import copy

    import torch

    graph_module = copy.deepcopy(program.module() if hasattr(program, "module") else program)
    layers = {n: CORRECTED_OPS[str(n.target)] for n in graph_module.graph.nodes
              if n.op == "call_function" and str(n.target) in CORRECTED_OPS
              and getattr(n.args[1], "op", None) == "get_attr"
              and (quantize_node is None or quantize_node(n))}
    shifts: dict[Any, Any] = {}

    class Measure(torch.fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            out = super().run_node(node)
            if node in layers:
                args, kwargs = self.fetch_args_kwargs_from_env(node)
                weight = (rounded or {}).get(node.args[1].target, args[1])
                args = (args[0], channel_quantized(weight, quant_range), *args[2:])
                error = node.target(*args, **kwargs) - out
                axis = layers[node] % error.dim()
                mean = error.mean(dim=[d for d in range(error.dim()) if d != axis])
                shifts[node] = shifts.get(node, 0) + mean / len(calibration)
            return out

    with torch.no_grad():
        for sample in tracked(calibration, "bias correction"):
            Measure(graph_module).run(*sample)
    for node, shift in shifts.items():
        _add_to_bias(graph_module, node, -shift)
    for target, weight in (rounded or {}).items():
        _set_attr(graph_module, target, weight)
    graph_module.recompile()
    return graph_module


def _set_attr(graph_module: Any, target: str, value: Any) -> None:
    """Replace a parameter/buffer/tensor attribute, keeping its kind."""
    import torch

    owner, _, attr = target.rpartition(".")
    module = graph_module.get_submodule(owner) if owner else graph_module
    is_param = attr in module._parameters
    setattr(module, attr, torch.nn.Parameter(value.detach().clone(), requires_grad=False) if is_param else value)


def _add_to_bias(graph_module: Any, node: Any, delta: Any) -> None:
    """bias += delta for a conv/linear node (a new bias parameter when it has none)."""
    import torch

    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if getattr(bias, "op", None) == "get_attr":
        owner, _, attr = bias.target.rpartition(".")
        module = graph_module.get_submodule(owner) if owner else graph_module
        value = getattr(module, attr).detach() + delta
        is_param = attr in module._parameters  # else a buffer or a plain tensor attribute
        setattr(module, attr, torch.nn.Parameter(value, requires_grad=False) if is_param else value)
        return
    if bias is not None:
        return  # a computed bias: leave it
    name = f"{node.args[1].target.replace('.', '_')}_bias_correction"
    graph_module.register_parameter(name, torch.nn.Parameter(delta.detach().clone(), requires_grad=False))
    with graph_module.graph.inserting_before(node):
        attr = graph_module.graph.get_attr(name)
    attr.meta["val"] = delta
    node.kwargs = {k: v for k, v in node.kwargs.items() if k != "bias"}
    node.args = (*node.args[:2], attr, *node.args[3:])


def maybe_bias_corrected(program: Any, recipe: Any, calibration: Sequence[tuple[Any, ...]],
                         quant_range: tuple[int, int], quantize_node: Callable[[Any], bool] | None = None) -> Any:
    """``program`` with bias correction when the recipe asks for it (``bias_correction = true``);
    ``quant_range`` is the backend's integer weight range, so the measured rounding is its own."""
    rounding = recipe.param("weight_rounding", "nearest")
    if rounding not in ("nearest", "gptq"):
        from edge_export.errors import UsageError

        raise UsageError(f"recipe {recipe.name}: weight_rounding {rounding!r} is not one of nearest, gptq")
    if not recipe.param("bias_correction", False) and rounding == "nearest":
        return program
    rounded = None
    if rounding == "gptq":
        from .rounding import gptq_rounded_weights

        module = program.module() if hasattr(program, "module") else program
        rounded = gptq_rounded_weights(module, calibration, quant_range, quantize_node)
        if not recipe.param("bias_correction", False):
            import copy

            module = copy.deepcopy(module)
            for target, weight in rounded.items():
                _set_attr(module, target, weight)
            return module
    return bias_corrected(program, calibration, quant_range, quantize_node, rounded)
