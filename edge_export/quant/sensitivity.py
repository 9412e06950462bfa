"""Per-layer quantization sensitivity, simulated in PyTorch on the exported graph.

Every target quantizes differently (PT2E on android/ios, ai-edge-quantizer on the
flatbuffer for tflite), but what makes a layer hard to quantize is the same everywhere:
the range of its input and output activations and the spread of its weights. So the
measurement is shared: the exported graph runs in float with *one* layer's input,
weights and output rounded the way the recipe declares (static activations: uint8
affine over the calibration min/max; dynamic: per-tensor over the tensor itself;
weights: symmetric per output channel, or per group of ``block_size``), and the SNR of
the model outputs against float says how much that layer alone loses. The same
simulator with *every* layer but a kept set rounded estimates how many layers
``keep_float = "auto"`` must keep; the real artifact (or PT2E reference) then decides.
It is a proxy for each backend's own rounding: ``bench/QUANTIZATION.md`` compares it
with PT2E quantizing only that layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edge_export.quant.mechanisms import WEIGHTED_OPS, module_names

# (input arg, weight arg, weight output-channel axis) per weighted op.
_ARGS = {"mm": (0, 1, -1), "addmm": (1, 2, -1), "conv_transpose1d": (0, 1, 1),
         "conv_transpose2d": (0, 1, 1), "conv_transpose3d": (0, 1, 1)}
_DEFAULT_ARGS = (0, 1, 0)


def layer_nodes(graph_module: Any) -> dict[str, list[Any]]:
    """Weighted op nodes (conv/linear/matmul) grouped by their innermost module, in graph order."""
    layers: dict[str, list[Any]] = {}
    for node in graph_module.graph.nodes:
        parts = str(node.target).split(".")
        if node.op != "call_function" or len(parts) < 2 or parts[1] not in WEIGHTED_OPS:
            continue
        names = [n for n in module_names(node) if n]
        if names:
            layers.setdefault(names[-1], []).append(node)
    return layers


class QuantSim:
    """Runs an exported graph with a chosen set of layers fake-quantized as ``recipe`` says."""

    def __init__(self, program: Any, recipe: Any, calibration: Sequence[tuple[Any, ...]],
                 max_calibration: int = 32) -> None:
        self.graph = program.module()
        self.layers = layer_nodes(self.graph)
        self.activations = recipe.param("activations", "float")
        self.bits = int(recipe.param("bits", 8))
        granularity = recipe.param("granularity", "per-channel")
        self.group = recipe.param("block_size") if granularity in ("per-block", "per-group") else None
        self.ranges: dict[str, tuple[float, float, float, float]] = {}
        if self.activations == "static":
            for sample in list(calibration)[:max_calibration]:
                self._run(sample, set(), record=True)

    @property
    def method(self) -> str:
        weights = f"int{self.bits} weights" + (f" in groups of {self.group}" if self.group else
                                               " per output channel")
        acts = {"static": "uint8 activations (calibration min/max)",
                "dynamic": "dynamic int8 activations", "float": "float activations"}
        return f"PyTorch simulation: {weights}, {acts.get(self.activations, self.activations)}"

    def outputs(self, sample: tuple[Any, ...], quantized: Iterable[str]) -> list[np.ndarray]:
        nodes = {n for layer in quantized for n in self.layers.get(layer, [])}
        return self._run(sample, nodes)

    def _run(self, sample: tuple[Any, ...], nodes: set[Any], record: bool = False) -> list[np.ndarray]:
        import torch
        from torch.utils._pytree import tree_leaves

        sim = self

        class Interpreter(torch.fx.Interpreter):
            def run_node(self, n: Any) -> Any:
                if not (record or n in nodes) or n.op != "call_function":
                    return super().run_node(n)
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                return sim._layer(n, list(args), kwargs, record)

        inputs = [torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
                  for x in sample]
        with torch.no_grad():
            out = Interpreter(self.graph).run(*inputs)
        return [t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy()
                for t in tree_leaves(out) if isinstance(t, torch.Tensor)]

    def _layer(self, node: Any, args: list[Any], kwargs: dict[str, Any], record: bool) -> Any:
        op = str(node.target).split(".")[1]
        i_in, i_w, axis = _ARGS.get(op, _DEFAULT_ARGS)
        if record:
            out = node.target(*args, **kwargs)
            lo_in, hi_in = float(args[i_in].min()), float(args[i_in].max())
            lo_out, hi_out = float(out.min()), float(out.max())
            old = self.ranges.get(node.name)
            if old:
                lo_in, hi_in = min(lo_in, old[0]), max(hi_in, old[1])
                lo_out, hi_out = min(lo_out, old[2]), max(hi_out, old[3])
            self.ranges[node.name] = (lo_in, hi_in, lo_out, hi_out)
            return out
        args[i_w] = self._weights(args[i_w], axis)
        rng = self.ranges.get(node.name)
        if self.activations == "static" and rng:
            args[i_in] = _fake_affine(args[i_in], rng[0], rng[1])
            return _fake_affine(node.target(*args, **kwargs), rng[2], rng[3])
        if self.activations == "dynamic":
            x = args[i_in]
            args[i_in] = _fake_affine(x, float(x.min()), float(x.max()))
        return node.target(*args, **kwargs)

    def _weights(self, w: Any, axis: int) -> Any:
        import torch

        qmax = 2 ** (self.bits - 1) - 1
        if self.group and w.dim() == 2 and w.shape[-1] % self.group == 0 and axis == 0:
            grouped = w.reshape(w.shape[0], -1, self.group)
            scale = grouped.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / qmax
            return (torch.round(grouped / scale).clamp(-qmax, qmax) * scale).reshape(w.shape)
        dims = [d for d in range(w.dim()) if d != axis % w.dim()]
        scale = w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / qmax
        return torch.round(w / scale).clamp(-qmax, qmax) * scale


def _fake_affine(x: Any, lo: float, hi: float, levels: int = 255) -> Any:
    """uint8 affine quantize-dequantize over [lo, hi] (widened to include 0, as PT2E does)."""
    import torch

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / levels if hi > lo else 1.0
    zero = round(-lo / scale)
    return (torch.round(x / scale).clamp(-zero, levels - zero)) * scale


def quality(reference: list[list[np.ndarray]], actual: list[list[np.ndarray]]) -> tuple[float, float]:
    """(worst SNR dB, worst cosine) over the float outputs; per sample, the list of outputs."""
    from edge_export.verify.parity import output_metrics

    snr, cos = float("inf"), 1.0
    for i in range(len(reference[0])):
        if not np.issubdtype(np.asarray(reference[0][i]).dtype, np.floating):
            continue
        m = output_metrics([s[i] for s in reference], [s[i] for s in actual], kind="tensor")
        snr, cos = min(snr, m["snr_db"]), min(cos, m["cosine"])
    return snr, cos


def sensitivities(sim: QuantSim, samples: Sequence[tuple[Any, ...]],
                  reference: list[list[np.ndarray]]) -> dict[str, float]:
    """Layer → SNR (dB) of the outputs when only that layer is quantized, most sensitive first."""
    alone = {}
    for layer in sim.layers:
        snr, _ = quality(reference, [sim.outputs(s, [layer]) for s in samples])
        alone[layer] = round(snr, 2)
    return dict(sorted(alone.items(), key=lambda kv: kv[1]))


def estimate_keep(sim: QuantSim, samples: Sequence[tuple[Any, ...]],
                  reference: list[list[np.ndarray]], order: Sequence[str],
                  snr_db: float | None, cosine: float | None) -> tuple[int, list[dict[str, float]]]:
    """Smallest k such that keeping the k most sensitive layers float meets the thresholds
    in simulation (len(order) if none does), and the simulated points tried."""
    tried = []
    for k in range(len(order) + 1):
        keep = set(order[:k])
        quantized = [layer for layer in order if layer not in keep]
        snr, cos = quality(reference, [sim.outputs(s, quantized) for s in samples])
        tried.append({"kept": k, "snr_db": round(snr, 2), "cosine": round(cos, 6)})
        if (snr_db is None or snr >= snr_db) and (cosine is None or cos >= cosine):
            return k, tried
    return len(order), tried
