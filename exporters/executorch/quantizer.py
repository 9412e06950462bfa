"""XNNPACKQuantizer that quantizes conv/linear -> ReLU6 (``hardtanh``) as one fused op.

ExecuTorch 1.5's XNNPACKQuantizer fuses only conv/linear -> ``relu`` when it annotates.
A ``hardtanh`` after a conv (ReLU6: EfficientNet-Lite, MobileNet v2) is annotated on its
own: the conv output gets an observer over its *pre-clamp* range (tens of units on
EfficientNet-Lite0) and the clamp shares those qparams, so [0, 6] keeps a handful of the
256 int8 levels. That cost 20+ dB of logit SNR on EfficientNet-Lite0 (4 dB vs 25+).

XNNPACK itself fuses a clamp into the conv's output min/max (``FuseActivationPass``;
its partitioner lists ``hardtanh`` as a fused activation of conv and linear), so the
right annotation is the one the quantizer already uses for ReLU: no observer between the
conv and the clamp, one observer on the clamp output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CLAMP_TARGETS = ("aten.hardtanh.default", "aten.hardtanh_.default")
LINEAR_TARGETS = ("aten.linear.default",)


def fused_clamp_quantizer() -> Any:
    """An ``XNNPACKQuantizer`` (same API) whose static annotation fuses conv/linear -> clamp."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class FusedClampQuantizer(XNNPACKQuantizer):
        def annotate(self, model: Any) -> Any:
            config = self.global_config
            if config is not None and not config.input_activation.is_dynamic:
                annotate_weighted_clamp(model, config, self.filter_fn)
            return super().annotate(model)  # skips nodes annotated here

    return FusedClampQuantizer()


def is_weighted(node: Any) -> bool:
    from torchao.quantization.pt2e.utils import _is_conv_node

    return node.op == "call_function" and (_is_conv_node(node) or str(node.target) in LINEAR_TARGETS)


def annotate_weighted_clamp(graph_module: Any, config: Any,
                            filter_fn: Callable[[Any], bool] | None) -> list[list[Any]]:
    """Annotate every conv/linear whose only user is a hardtanh as one partition: inputs
    and weight quantized at the conv, output observed after the clamp (as conv -> relu)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import (
        _is_annotated,
        _mark_nodes_as_annotated,
    )
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    partitions = []
    for clamp in graph_module.graph.nodes:
        if clamp.op != "call_function" or str(clamp.target) not in CLAMP_TARGETS:
            continue
        op = clamp.args[0]
        if not is_weighted(op) or len(op.users) > 1:
            continue  # another user needs the unclamped value: no fusion possible
        qspecs = {op.args[0]: get_input_act_qspec(config), op.args[1]: get_weight_qspec(config)}
        partition = [clamp, op, op.args[1]]
        bias = op.args[2] if len(op.args) > 2 else None
        if hasattr(bias, "op"):
            qspecs[bias] = get_bias_qspec(config)
            partition.append(bias)
        if _is_annotated(partition) or (filter_fn and not all(filter_fn(n) for n in partition)):
            continue
        op.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
        clamp.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
            output_qspec=get_output_act_qspec(config), _annotated=True)
        _mark_nodes_as_annotated(partition)
        partitions.append(partition)
    return partitions


def requantize_float_pads(graph_module: Any) -> Any:
    """Give each zero pad that reads a dequantized tensor but feeds a *float* op its own q/dq.

    XNNPACK's ``InsertPadQDQPass`` assumes every ``dequantize -> constant_pad_nd`` feeds a
    quantized conv and tags an implicit q/dq after the pad. When ``keep_float`` leaves the
    conv float (EfficientNet's ``Conv2dStaticSamePadding`` pads inside the kept module), the
    float conv then reads a "quantized" input and lowering fails with "Weight and Input
    should both be quantized". An explicit requantization at the dequantize's own scale is
    exact for zero padding, so the quantized reference and the artifact stay identical."""
    import torch

    qd = torch.ops.quantized_decomposed
    pads = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
    graph = graph_module.graph
    for pad in list(graph.nodes):
        if pad.op != "call_function" or pad.target not in pads:
            continue
        source = pad.args[0]
        value = pad.kwargs.get("value", pad.args[3] if len(pad.args) > 3 else None)
        if (getattr(source, "target", None) != qd.dequantize_per_tensor.default or value not in (None, 0, 0.0)
                or any(user.target == qd.quantize_per_tensor.default for user in pad.users)):
            continue
        params = source.args[1:]
        with graph.inserting_after(pad):
            quantize = graph.call_function(qd.quantize_per_tensor.default, (pad, *params))
        with graph.inserting_after(quantize):
            dequantize = graph.call_function(qd.dequantize_per_tensor.default, (quantize, *params))
        pad.replace_all_uses_with(dequantize)
        quantize.args = (pad, *params)
    graph_module.recompile()
    return graph_module


def unfloored_dynamic_ranges(graph_module: Any) -> Any:
    """The quantized reference's dynamic activation scales without the 2**-12 floor.

    XNNPACKQuantizer's dynamic config gives ``choose_qparams`` an eps of 2**-12, so in the
    PyTorch reference every activation whose range is under ~0.03 keeps a few int8 levels,
    and one under 2**-13 rounds to zero. XNNPACK's dynamic kernels take each range as it
    is: on a seeded MobileNetV3-small whose late activations are ~1e-7 the ``.pte`` kept
    cosine 0.9996 against float while the reference returned zeros (fidelity cosine 0).
    XNNPACK's lowering ignores eps (the ``.pte`` bytes are the same), so only the
    reference changes: eps becomes float32's smallest normal, which only guards a zero range."""
    import torch

    choose = torch.ops.quantized_decomposed.choose_qparams.tensor
    tiny = torch.finfo(torch.float32).tiny
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target == choose and len(node.args) > 3:
            node.args = (*node.args[:3], tiny, *node.args[4:])
    graph_module.recompile()
    return graph_module
