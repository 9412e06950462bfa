"""Data-aware weight rounding that every backend reproduces (``weight_rounding = "gptq"``).

Round-to-nearest minimises each weight's own error; what matters is the layer's output
error ``(W_q - W) x`` on real inputs. GPTQ (Frantar et al., ICLR 2023, after Optimal Brain
Quantization) rounds one input column at a time and spreads each column's rounding error
over the columns not rounded yet, weighted by the inverse Hessian ``H = E[x x^T]`` of the
layer's inputs, measured here on the calibration data with float upstream activations.

The backends quantize the weights themselves (per output channel, symmetric, scale from
the row's max |w|, round to nearest). So the chosen rounding is handed over *as float
weights on that grid*: every weight becomes ``q * scale``, except each row's max-|w|
weight, which keeps its float value so the backend derives the same scale; its rounding
to nearest then returns exactly ``q``. Per-output-channel scaling (BN folding) multiplies
both the row and its scale, so the codes survive folding too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .calibrating import tracked

ROUNDED_OPS = ("aten.conv2d.default", "aten.linear.default")
DAMPING = 0.01  # of the mean Hessian diagonal (GPTQ's default): keeps H invertible


def _weight(graph_module: Any, node: Any) -> Any:
    owner, _, attr = node.args[1].target.rpartition(".")
    return getattr(graph_module.get_submodule(owner) if owner else graph_module, attr)


def input_hessians(graph_module: Any, calibration: Sequence[tuple[Any, ...]],
                   quantize_node: Callable[[Any], bool] | None = None) -> dict[Any, Any]:
    """``E[x x^T]`` of each rounded layer's inputs, per group: (groups, d, d) float64."""
    import torch

    layers = [n for n in graph_module.graph.nodes if n.op == "call_function" and str(n.target) in ROUNDED_OPS
              and getattr(n.args[1], "op", None) == "get_attr" and (quantize_node is None or quantize_node(n))]
    hessians: dict[Any, Any] = {}
    counts: dict[Any, int] = {}

    class Collect(torch.fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            if node in layers:
                x = self.env[node.args[0]]
                if str(node.target) == "aten.linear.default":
                    cols = x.reshape(-1, x.shape[-1]).T.unsqueeze(0)
                else:
                    weight = _weight(graph_module, node)
                    args = list(node.args) + [None] * (7 - len(node.args))
                    patches = torch.nn.functional.unfold(
                        x, tuple(weight.shape[2:]), dilation=args[5] or 1, padding=args[4] or 0,
                        stride=args[3] or 1)
                    groups = args[6] or 1
                    n, d, positions = patches.shape
                    cols = patches.reshape(n, groups, d // groups, positions).permute(1, 2, 0, 3) \
                        .reshape(groups, d // groups, n * positions)
                cols = cols.double()
                hessians[node] = hessians.get(node, 0) + cols @ cols.transpose(1, 2)
                counts[node] = counts.get(node, 0) + cols.shape[-1]
            return super().run_node(node)

    with torch.no_grad():
        for sample in tracked(calibration, "gptq statistics"):
            Collect(graph_module).run(*sample)
    return {node: h / counts[node] for node, h in hessians.items()}


def gptq_round(weight: Any, hessian: Any, quant_range: tuple[int, int]) -> Any:
    """``weight`` (out, ...) rounded column by column with error feedback, returned as float
    weights on the backend's per-row grid (see the module docstring). ``hessian`` is
    (groups, d, d) with ``out`` divisible by ``groups``."""
    import torch

    qmin, qmax = quant_range
    groups, d, _ = hessian.shape
    w = weight.detach().double().reshape(groups, weight.shape[0] // groups, d).clone()
    original = w.clone()
    flat = original.reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / ((qmax - qmin) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    scale = scale.reshape(groups, -1)
    pivot = flat.abs().argmax(dim=1).reshape(groups, -1)  # keeps its float value
    limit = min(-qmin, qmax)  # other codes stay inside +-max|w|, so the scale cannot change

    h = hessian.clone()
    dead = torch.diagonal(h, dim1=1, dim2=2) == 0
    h[torch.diag_embed(dead)] = 1.0
    w[dead.unsqueeze(1).expand_as(w)] = 0.0
    damp = DAMPING * torch.diagonal(h, dim1=1, dim2=2).mean(dim=1)
    h += damp[:, None, None] * torch.eye(d, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    out = torch.empty_like(w)
    for i in range(d):
        col = w[:, :, i]
        codes = torch.round(col / scale)
        is_pivot = pivot == i
        backend = torch.clamp(torch.round(original[:, :, i] / scale), qmin, qmax) * scale
        q = torch.where(is_pivot, backend, torch.clamp(codes, -limit, limit) * scale)
        out[:, :, i] = torch.where(is_pivot, original[:, :, i], q)
        err = (col - q) / hinv[:, i, i].unsqueeze(1)
        w[:, :, i + 1:] -= err.unsqueeze(2) * hinv[:, i, i + 1:].unsqueeze(1)
    out[dead.unsqueeze(1).expand_as(out)] = 0.0
    out = torch.where(pivot.unsqueeze(2) == torch.arange(d), original, out)
    return out.reshape(weight.shape).to(weight.dtype)


def gptq_rounded_weights(graph_module: Any, calibration: Sequence[tuple[Any, ...]],
                         quant_range: tuple[int, int],
                         quantize_node: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """Weight attribute name -> GPTQ-rounded float weight, for every conv2d/linear layer."""
    rounded = {}
    for node, hessian in input_hessians(graph_module, calibration, quantize_node).items():
        rounded[node.args[1].target] = gptq_round(_weight(graph_module, node), hessian, quant_range)
    return rounded
