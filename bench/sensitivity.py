"""Checks the per-layer sensitivity proxy (edge_export/quant/sensitivity.py) against the real thing.

For each weighted layer of a model: the SNR of the outputs when *only that layer* is
quantized (a) by the PyTorch simulation keep_float = "auto" and the failed-gate message use,
and (b) by PT2E with XNNPACKQuantizer (android's int8-static) annotating only the nodes of
that layer's parent module (conv + BN + activation). Prints both per layer and their
Spearman rank correlation; the proxy is useful if it ranks the layers the same way (the
absolute dB differ: PT2E quantizes after BN + activation, the simulation the conv output).

Usage: python bench/sensitivity.py [--model examples/dwnet.py:build] [--samples 16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"


def main() -> None:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    from edge_export.load.model import load_model
    from edge_export.quant.mechanisms import module_names, run_pt2e
    from edge_export.quant.recipe import builtin_recipes
    from edge_export.quant.sensitivity import QuantSim, quality, sensitivities

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="examples/dwnet.py:build")
    parser.add_argument("--calibration", default=str(DATA / "digits_calib.npz"))
    parser.add_argument("--validation", default=str(DATA / "digits_val.npz"))
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()

    loaded = load_model(args.model)
    program = torch.export.export(loaded.module, loaded.example_inputs)
    def samples(path: str, count: int) -> list[tuple]:
        arrays = np.load(path)  # one input: the first array (digits: "x")
        column = arrays[arrays.files[0]]
        return [(torch.from_numpy(column[i:i + 1].astype(np.float32)),) for i in range(min(count, len(column)))]

    calib = samples(args.calibration, 64)
    inputs = samples(args.validation, args.samples)
    with torch.no_grad():
        reference = [[loaded.module(*s).numpy()] for s in inputs]

    recipe = builtin_recipes("android")["int8-static"]
    sim = QuantSim(program, recipe, calib)
    simulated = sensitivities(sim, inputs, reference)

    real = {}
    for layer in sim.layers:
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        # The layer's parent module: XNNPACK annotates conv+BN+ReLU as one pattern and skips
        # it unless every node passes the filter (BN and ReLU are the conv's siblings).
        owner = layer.rsplit(".", 1)[0] if "." in layer else layer
        # Weights (get_attr nodes) carry no module stack: they belong to whichever op uses them.
        quantizer.set_filter_function(lambda n, owner=owner: n.op != "call_function" or any(
            m == owner or m.startswith(owner + ".") for m in module_names(n)))
        quantized = run_pt2e(program, quantizer, calib)
        with torch.no_grad():
            actual = [[quantized(*s).numpy()] for s in inputs]
        real[layer] = round(quality(reference, actual)[0], 2)

    layers = list(sim.layers)
    rank = {name: i for i, name in enumerate(sorted(layers, key=simulated.get))}
    rank_real = {name: i for i, name in enumerate(sorted(layers, key=real.get))}
    n = len(layers)
    rho = 1 - 6 * sum((rank[x] - rank_real[x]) ** 2 for x in layers) / (n * (n * n - 1)) if n > 1 else 1.0
    print("| layer | simulated SNR dB (alone) | PT2E XNNPACK SNR dB (alone) |")
    print("|---|---|---|")
    for name in sorted(layers, key=real.get):
        print(f"| {name} | {simulated[name]:.1f} | {real[name]:.1f} |")
    print(f"\nSpearman rank correlation: {rho:.3f} over {n} layers, {args.samples} samples")
    json.dump({"simulated": simulated, "pt2e": real, "spearman": rho}, sys.stderr)


if __name__ == "__main__":
    main()
