"""PyTorch-side LLM quantization with torchao, shared by the backends that lower
torchao-quantized graphs (XNNPACK): 8da4w and 8da8w on every eligible Linear, and with
``quantize_embeddings`` weight-only int4/int8 on the embedding table, which ExecuTorch's
quant fusion turns into ``quantized_decomposed::embedding_4bit`` / ``embedding_byte``.

A grouped scheme cannot quantize a Linear whose input width is not a multiple of the group
size: the backends that leave such layers float (android, ios) record them with
``record_unquantized``, and the manifest lists them (``unquantized``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_export.errors import UsageError
from edge_export.llm.recipe import LLMRecipe


def torchao_quantize(model: Any, recipe: LLMRecipe) -> Any:
    if not recipe.quantized:
        return model
    import torch
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    if recipe.activations != "int8-dynamic":
        raise UsageError(f"recipe {recipe.name}: torchao backends need int8-dynamic activations "
                         "(XNNPACK weight-only computes wrong outputs)")
    group = recipe.group_size
    granularity = PerGroup(group) if group else PerAxis(0)

    def eligible(module: torch.nn.Module, _fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and (not group or module.in_features % group == 0)

    if not any(eligible(m, "") for m in model.modules()):
        raise UsageError(f"recipe {recipe.name}: no Linear layer has in_features divisible by {group}")
    record_unquantized(model, lambda module: eligible(module, ""))
    weight_dtype = {"int4": torch.int4, "int8": torch.int8}[recipe.weights]
    quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=weight_dtype,
                                                           weight_granularity=granularity),
              filter_fn=eligible)
    if recipe.quantize_embeddings:
        from torchao.quantization import IntxWeightOnlyConfig

        # a tied table was just replaced in the output layer only, so this is the embedding's own
        quantize_(model, IntxWeightOnlyConfig(weight_dtype=weight_dtype, granularity=granularity),
                  filter_fn=lambda module, _fqn: isinstance(module, torch.nn.Embedding))
    return model


UNQUANTIZED = "edge_export_unquantized"  # the record's attribute on the quantized model


def record_unquantized(model: Any, quantized: Callable[[Any], bool]) -> dict[str, Any]:
    """Record on ``model`` the Linear layers a quantized recipe leaves float (``quantized``
    says which it does quantize) and their share of the model's weights (parameters, a tied
    tensor counted once), for the manifest. Call before quantizing: the shares are of the
    float weights. The input embedding is not listed: the recipe's ``quantize_embeddings``
    says whether it is quantized."""
    import torch

    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    layers, counted = [], {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not quantized(module):
            layers.append(name)
            for param in module.parameters(recurse=False):
                counted[id(param)] = param.numel()
    record = {"layers": layers, "weight_share": round(sum(counted.values()) / total, 6) if total else 0.0}
    setattr(model, UNQUANTIZED, record)
    return record


def unquantized(model: Any) -> dict[str, Any] | None:
    """What ``record_unquantized`` recorded on ``model`` (None: a float recipe, nothing quantized)."""
    return getattr(model, UNQUANTIZED, None)
