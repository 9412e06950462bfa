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
# A layer seen on fewer input vectors than this many per weight column keeps round to
# nearest: its H is (near) rank-deficient and the error feedback fits the calibration
# samples instead of the data (EfficientNet-Lite0's 1280->1000 classifier on 64 images,
# its 1152-channel 1x1 convs at 7x7: all layers rounded together fell from 16.8 to 9.3 dB;
# weights alone, 64 calibration images, held-out crops: 13.8 dB at 2, 23.8 at 8, 24.5 at 4).
MIN_VECTORS_PER_COLUMN = 4


def _weight(graph_module: Any, node: Any) -> Any:
    owner, _, attr = node.args[1].target.rpartition(".")
    return getattr(graph_module.get_submodule(owner) if owner else graph_module, attr)


def input_hessians(graph_module: Any, calibration: Sequence[tuple[Any, ...]],
                   quantize_node: Callable[[Any], bool] | None = None) -> dict[Any, Any]:
    """``E[x x^T]`` of each rounded layer's inputs, per group: (groups, d, d) float64, over the
    even-numbered and over the odd-numbered calibration samples, and the number of input
    vectors in all."""
    import torch

    layers = [n for n in graph_module.graph.nodes if n.op == "call_function" and str(n.target) in ROUNDED_OPS
              and getattr(n.args[1], "op", None) == "get_attr" and (quantize_node is None or quantize_node(n))]
    hessians: dict[tuple[Any, int], Any] = {}
    counts: dict[tuple[Any, int], int] = {}
    half = [0]

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
                cols, key = cols.double(), (node, half[0])
                hessians[key] = hessians.get(key, 0) + cols @ cols.transpose(1, 2)
                counts[key] = counts.get(key, 0) + cols.shape[-1]
            return super().run_node(node)

    with torch.no_grad():
        for i, sample in enumerate(tracked(calibration, "gptq statistics")):
            half[0] = i % 2
            Collect(graph_module).run(*sample)
    return {node: (hessians[node, 0] / counts[node, 0], hessians[node, 1] / counts[node, 1],
                   counts[node, 0] + counts[node, 1])
            for node in layers if (node, 1) in hessians}


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
    # "act order": the columns with the largest inputs first, while the most columns are
    # left to absorb their error (GPTQ's reference implementation, its better variant).
    order = torch.argsort(torch.diagonal(h, dim1=1, dim2=2), dim=1, descending=True)  # (groups, d)
    inverse = torch.argsort(order, dim=1)
    by_col = order.unsqueeze(1).expand_as(w)
    w, ordered = torch.gather(w, 2, by_col), torch.gather(original, 2, by_col)
    h = torch.gather(torch.gather(h, 1, order.unsqueeze(2).expand_as(h)), 2, order.unsqueeze(1).expand_as(h))
    pivot_at = torch.gather(inverse, 1, pivot)  # each row's pivot, in processing order
    damp = DAMPING * torch.diagonal(h, dim1=1, dim2=2).mean(dim=1)
    h += damp[:, None, None] * torch.eye(d, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    out = torch.empty_like(w)
    for i in range(d):
        col = w[:, :, i]
        is_pivot = pivot_at == i
        backend = torch.clamp(torch.round(ordered[:, :, i] / scale), qmin, qmax) * scale
        q = torch.where(is_pivot, backend, torch.clamp(torch.round(col / scale), -limit, limit) * scale)
        out[:, :, i] = q
        err = (col - q) / hinv[:, i, i].unsqueeze(1)
        w[:, :, i + 1:] -= err.unsqueeze(2) * hinv[:, i, i + 1:].unsqueeze(1)
    out = torch.gather(out, 2, inverse.unsqueeze(1).expand_as(out))
    out[dead.unsqueeze(1).expand_as(out)] = 0.0
    out = torch.where(pivot.unsqueeze(2) == torch.arange(d), original, out)  # the scale's anchor
    return out.reshape(weight.shape).to(weight.dtype)


def gptq_rounded_weights(graph_module: Any, calibration: Sequence[tuple[Any, ...]],
                         quant_range: tuple[int, int],
                         quantize_node: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """Weight attribute name -> GPTQ-rounded float weight, for the conv2d/linear layers with
    enough calibration inputs (``MIN_VECTORS_PER_COLUMN``) where it is validated; the others
    are left out (the backend rounds them to nearest).

    Validation: rounded with the statistics of half the calibration samples, the layer's
    output error on the other half must beat round to nearest's. On EfficientNet-Lite0 the
    1152-channel 1x1 convs at 7x7 overfit 128 calibration images (14.5 dB end to end vs
    23.6 with 64, where the vector threshold left them out)."""
    from .mechanisms import channel_quantized

    rounded = {}
    for node, (fit, check, vectors) in input_hessians(graph_module, calibration, quantize_node).items():
        if vectors < MIN_VECTORS_PER_COLUMN * fit.shape[-1]:
            continue
        weight = _weight(graph_module, node)
        trial = channel_quantized(gptq_round(weight, fit, quant_range), quant_range)
        if _output_error(trial, weight, check) < _output_error(channel_quantized(weight, quant_range),
                                                               weight, check):
            rounded[node.args[1].target] = gptq_round(weight, (fit + check) / 2, quant_range)
    return rounded


def _output_error(quantized: Any, weight: Any, hessian: Any) -> float:
    """E||(W_q - W) x||^2 for inputs with second moment ``hessian`` (groups, d, d)."""
    import torch

    groups, d, _ = hessian.shape
    delta = (quantized.double() - weight.double()).reshape(groups, -1, d)
    return float(torch.einsum("grd,gde,gre->", delta, hessian, delta))
