"""Core ML's weight quantization, reproduced in PyTorch for the same-quantization reference.

``ct.optimize.coreml.linear_quantize_weights`` in ``linear_symmetric`` mode computes, per
block (``group_size`` input columns of one output row, or a whole row when per-channel):
``scale = (max|w| - (-max|w|)) / (qmax - qmin)`` with the restricted signed range
``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``, ``q = clip(round_half_even(w / scale))``, and the
device dequantizes ``q * scale`` (``constexpr_blockwise_shift_scale``). torchao's int4
weights use a different range and rounding, so the reference is this function instead:
the Linear weights are replaced by exactly the values the artifact dequantizes to.
The export hands these weights to coremltools with their scales as compression info
(``COMPRESSION``), and coremltools' division by those scales gives back the same codes
(checked by ``tests/test_llm_ios.py``).
"""

from __future__ import annotations

from typing import Any

from edge_export.errors import UsageError
from edge_export.llm.quantize import record_unquantized
from edge_export.llm.recipe import LLMRecipe

BITS = {"int8": 8, "int4": 4}


def eligible(module: Any, group: int) -> bool:
    """The Linear layers Core ML quantizes: those whose input width divides into blocks."""
    import torch

    return isinstance(module, torch.nn.Linear) and (not group or module.in_features % group == 0)


def quantize_weight(weight: Any, bits: int, group: int) -> tuple[Any, Any]:
    """(codes [out, in], scale [out, blocks]) of ``weight`` on Core ML's symmetric per-block
    (or per-channel: one block per row) grid; the device dequantizes ``codes * scale``."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    blocks = weight.detach().float().reshape(rows, cols // group if group else 1, group or cols)
    max_abs = blocks.abs().amax(-1, keepdim=True)
    scale = (max_abs - (-max_abs)) / (2 * qmax)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    codes = torch.clamp(torch.round(blocks / scale), -qmax, qmax)
    return codes.reshape(rows, cols), scale.reshape(rows, -1)


def dequantize(codes: Any, scale: Any) -> Any:
    """``codes * scale``, each scale over its block of columns: what the device computes."""
    rows, cols = codes.shape
    return (codes.reshape(rows, scale.shape[1], -1) * scale[:, :, None]).reshape(rows, cols)


def coreml_fake_quantize(model: Any, recipe: LLMRecipe) -> Any:
    """Round every eligible Linear weight in place (tied embeddings share the lm_head's), and
    attach the codes' scales as coremltools compression info (see ``COMPRESSION``)."""
    if not recipe.quantized:
        return model
    import torch

    if recipe.activations != "float32":
        raise UsageError(f"recipe {recipe.name}: Core ML quantizes weights only "
                         "(set [targets.ios] activations = \"float32\")")
    group, bits = recipe.group_size, BITS[recipe.weights]
    layers = [m for m in model.modules() if eligible(m, group)]
    if not layers:
        raise UsageError(f"recipe {recipe.name}: no Linear layer has in_features divisible by {group}")
    record_unquantized(model, lambda module: eligible(module, group))
    owners: dict[int, list[Any]] = {}  # a tied weight: every module that holds it gets the info
    for module in model.modules():
        if isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            owners.setdefault(id(module.weight), []).append(module)
    with torch.no_grad():
        for layer in layers:
            codes, scale = quantize_weight(layer.weight, bits, group)
            layer.weight.copy_(dequantize(codes, scale))
            for module in owners[id(layer.weight)]:
                attach_compression_info(module, bits, scale)
    return model


COMPRESSION = "_COREML_/weight/"
"""coremltools' torch frontend reads buffers ``<module>._COREML_/weight/<key>`` as the
compression of ``<module>.weight`` and emits ``constexpr_blockwise_shift_scale`` with
``codes = round(weight / scale)`` straight from the PyTorch tensor while converting
(``TorchConverter._construct_quantization_op``): the fp32 weights never become MIL
constants, so the conversion holds int codes rather than a second fp32 copy of the model
(the 1.1 B benchmark: ~13 GB per function before, when ``linear_quantize_weights``
compressed an fp32 program afterwards). Our ``weight`` is exactly ``codes * scale``, so the
division gives back the codes, and the artifact holds exactly this scale."""


def attach_compression_info(module: Any, bits: int, scale: Any) -> None:
    import torch

    info = {"compression_type": torch.tensor([3]),  # coremltools' CompressionType.QUANTIZATION
            "quantization_n_bits": torch.tensor(bits), "quantization_scale": scale}
    for key, value in info.items():
        module.register_buffer(COMPRESSION + key, value)
