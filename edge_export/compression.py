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


def prepare_compressed(module: torch.nn.Module) -> Compression:
    """Put the module in inference mode and fold or refuse what the user's compression left."""
    found = Compression()
    _refuse_tensor_subclasses(module)
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
    return found


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


def _refuse_tensor_subclasses(module: torch.nn.Module) -> None:
    """torchao ``quantize_`` swaps weights for tensor subclasses that the exporters cannot
    trace; each target has its own scheme for what they encode."""
    kinds = sorted({type(p).__name__ for p in module.parameters() if type(p) not in PLAIN_TENSORS}
                   | {type(p.data).__name__ for p in module.parameters()
                      if type(p) is torch.nn.Parameter and type(p.data) not in PLAIN_TENSORS})
    if kinds:
        raise UsageError(
            f"the model's weights are torchao-quantized tensor subclasses ({', '.join(kinds)}), "
            "which no target's exporter can lower as they are",
            hint="export the float model with the matching recipe instead: int8 weight-only → "
            "--recipe int8-weight (ios, tflite); int8 dynamic activations + int4 weights → "
            "--recipe 8da4w (android, tflite) or int4-weight (ios); int8 dynamic → "
            "--recipe int8-dynamic (android, tflite)")
