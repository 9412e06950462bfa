"""Core ML's weight quantization, reproduced in PyTorch for the same-quantization reference.

``ct.optimize.coreml.linear_quantize_weights`` in ``linear_symmetric`` mode computes, per
block (``group_size`` input columns of one output row, or a whole row when per-channel):
``scale = (max|w| - (-max|w|)) / (qmax - qmin)`` with the restricted signed range
``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``, ``q = clip(round_half_even(w / scale))``, and the
device dequantizes ``q * scale`` (``constexpr_blockwise_shift_scale``). torchao's int4
weights use a different range and rounding, so the reference is this function instead:
the Linear weights are replaced by exactly the values the artifact dequantizes to.
The export then hands these weights to coremltools, whose quantization of an
already-quantized tensor gives back the same codes and scales (checked by
``tests/test_llm_ios.py``).
"""

from __future__ import annotations

from typing import Any

from edge_export.errors import UsageError
from edge_export.llm.recipe import LLMRecipe

BITS = {"int8": 8, "int4": 4}


def eligible(module: Any, group: int) -> bool:
    """The Linear layers Core ML quantizes: those whose input width divides into blocks."""
    import torch

    return isinstance(module, torch.nn.Linear) and (not group or module.in_features % group == 0)


def fake_quantize_weight(weight: Any, bits: int, group: int) -> Any:
    """``weight`` [out, in] rounded to Core ML's symmetric per-block (or per-channel) grid."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    rows, cols = weight.shape
    blocks = weight.detach().float().reshape(rows, cols // group if group else 1, group or cols)
    max_abs = blocks.abs().amax(-1, keepdim=True)
    scale = (max_abs - (-max_abs)) / (2 * qmax)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    codes = torch.clamp(torch.round(blocks / scale), -qmax, qmax)
    return (codes * scale).reshape(rows, cols).to(weight.dtype)


def coreml_fake_quantize(model: Any, recipe: LLMRecipe) -> Any:
    """Round every eligible Linear weight in place (tied embeddings share the lm_head's)."""
    if not recipe.quantized:
        return model
    import torch

    if recipe.activations != "float32":
        raise UsageError(f"recipe {recipe.name}: Core ML quantizes weights only "
                         "(set [targets.ios] activations = \"float32\")")
    group = recipe.group_size
    layers = [m for m in model.modules() if eligible(m, group)]
    if not layers:
        raise UsageError(f"recipe {recipe.name}: no Linear layer has in_features divisible by {group}")
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(fake_quantize_weight(layer.weight, BITS[recipe.weights], group))
    return model


def optimization_config(recipe: LLMRecipe, mlmodel: Any) -> Any:
    """coremltools' config for the same scheme, on every weight that feeds a ``linear`` op.

    Named per weight rather than per op type: a tied embedding is one constant feeding both
    the lm_head ``linear`` and the embedding ``gather``, which op-type configs reject as a
    conflict. Quantizing it for both is what PyTorch does too (the tied Parameter is the
    lm_head's weight), and blocks run along the hidden axis for both ops."""
    from edge_export.exporters.coreml.schemes import coremltools

    cto = coremltools().optimize.coreml
    granularity = {"granularity": "per_block", "block_size": recipe.group_size} if recipe.group_size \
        else {"granularity": "per_channel"}
    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=recipe.weights, weight_threshold=0,
                                         **granularity)
    weights = cto.get_weights_metadata(mlmodel, weight_threshold=0)
    names = [name for name, meta in weights.items() if any(child.op_type == "linear" for child in meta.child_ops)]
    return cto.OptimizationConfig(op_name_configs=dict.fromkeys(names, config))
