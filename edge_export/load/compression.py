"""What the user already did to compress the model, detected before export.

A user often hands over a model that is already pruned, quantized or cast. Each case is
either carried onto every target (pruning masks folded into the weights, PT2E
quantize/dequantize graphs lowered as they are, fp16 weights upcast and reported) or
refused in one line that says which recipe does the job instead, never silently
re-quantized or exported as something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from edge_export.errors import UsageError

PT2E_OPS = ("quantized_decomposed.", "torchao.quantize_affine", "torchao.dequantize_affine")
PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


@dataclass
class Compression:
    """Recorded in the manifest's ``source.compression``."""

    pruned_parameters: list[str] = field(default_factory=list)  # masks folded into weights
    sparsity: float = 0.0  # fraction of exact zeros over the weight tensors
    quantization: str | None = None  # "pt2e" when the model carries quantize/dequantize ops
    source_dtype: str = "float32"  # "float16" when the user cast the model with .half()
    layout: str = "contiguous"  # "channels_last" when the weights were channels-last

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    def to_json(self) -> dict[str, Any]:
        return {"pruned_parameters": len(self.pruned_parameters), "sparsity": round(self.sparsity, 4),
                "quantization": self.quantization, "source_dtype": self.source_dtype,
                "layout": self.layout}


# torchao ``quantize_`` schemes are recorded as ``torchao:<scheme>``; each target's recipe
# that ships one says so (``[carries]`` in recipes/<target>/*.toml), and a target with none
# (XNNPACK has no weight-only int8 kernels; Core ML has no dynamic activations) refuses.
TORCHAO_PREFIX = "torchao:"


def prepare_compressed(module: torch.nn.Module) -> tuple[torch.nn.Module, Compression, torch.nn.Module | None]:
    """Put the module in inference mode and fold or refuse what the user's compression left.

    Returns the module to export, what was found, and, when the exported module computes
    differently from the user's (torchao weights dequantized for the target's own scheme),
    the user's module: parity references come from it."""
    found = Compression()
    reference = None
    scheme = torchao_scheme(module)
    if scheme is not None:
        reference = module.eval()
        module = dequantized_copy(module)
        found.quantization = TORCHAO_PREFIX + scheme
    if is_pt2e_quantized(module):
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(module)
        found.quantization = "pt2e"
    else:
        module.eval()
    found.pruned_parameters = fold_pruning_masks(module)
    if any(p.dtype == torch.float16 for p in module.parameters()):
        module.float()  # every runtime takes float32 I/O; fp16 recipes re-apply 16-bit weights
        found.source_dtype = "float16"
    found.sparsity = weight_sparsity(module)
    return module, found, reference


def is_pt2e_quantized(module: torch.nn.Module) -> bool:
    if not isinstance(module, torch.fx.GraphModule):
        return False
    return any(node.op == "call_function" and str(node.target).startswith(PT2E_OPS)
               for node in module.graph.nodes)


def fold_pruning_masks(module: torch.nn.Module) -> list[str]:
    """``torch.nn.utils.prune`` keeps ``weight_orig`` and ``weight_mask`` and recomputes the
    weight in a forward pre-hook; exporters would trace the multiply (ExecuTorch computed wrong
    outputs on it). Folding makes the pruned weight a plain parameter with its zeros."""
    from torch.nn.utils import prune

    folded = []
    for name, sub in module.named_modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):  # PruningContainer included
                prune.remove(sub, hook._tensor_name)
                folded.append(f"{name}.{hook._tensor_name}" if name else hook._tensor_name)
    return sorted(folded)


def weight_sparsity(module: torch.nn.Module) -> float:
    total = zeros = 0
    for param in module.parameters():
        if param.dim() >= 2 and type(param) in PLAIN_TENSORS:
            total += param.numel()
            zeros += int((param == 0).sum())
    return zeros / total if total else 0.0


def _subclass_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters()
            if type(p) not in PLAIN_TENSORS or type(p.data) not in PLAIN_TENSORS]


def torchao_scheme(module: torch.nn.Module) -> str | None:
    """Which ``quantize_`` scheme the weights carry (``int8-weight``, ``int8-dynamic``, ``8da4w``,
    ``int4-weight``), None for plain weights. torchao swaps weights for tensor subclasses that
    no exporter can trace; their attributes say what they compute. An unknown subclass is refused in one line."""
    weights = _subclass_weights(module)
    if not weights:
        return None
    schemes = {_weight_scheme(w) for w in weights}
    if None in schemes or len(schemes) > 1:
        kinds = sorted({type(w).__name__ for w in weights})
        raise UsageError(
            f"the model's weights are tensor subclasses edge-export does not carry ({', '.join(kinds)})",
            hint="export the float model with a recipe instead (edge-export recipes); carried: torchao "
            "Int8WeightOnly, Int8DynamicActivationInt8Weight, Int8DynamicActivationIntxWeight(int4), "
            "IntxWeightOnly(int4)")
    return schemes.pop()


def _weight_scheme(weight: torch.Tensor) -> str | None:
    kind = type(weight).__name__
    if kind == "Int8Tensor":
        return "int8-weight" if getattr(weight, "act_quant_kwargs", None) is None else "int8-dynamic"
    if kind == "IntxUnpackedToInt8Tensor" and getattr(weight, "target_dtype", None) == torch.int4:
        return "int4-weight" if getattr(weight, "activation_quantization", None) is None else "8da4w"
    return None


def dequantized_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float copy whose weights are the user's quantized weights dequantized: every value
    sits on the quantization grid, so the target's own scheme of the same kind finds it again."""
    import copy

    float_module = copy.deepcopy(module)
    for sub in float_module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if type(param) not in PLAIN_TENSORS or type(param.data) not in PLAIN_TENSORS:
                setattr(sub, name, torch.nn.Parameter(param.dequantize().detach().clone(), requires_grad=False))
    return float_module.eval()
