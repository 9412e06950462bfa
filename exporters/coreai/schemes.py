"""How each recipe scheme is done for Core AI, with Apple's coreai-opt.

Weight compression (int8/int4 linear, k-means palettization) is coreai-opt's Core AI IR
passes (``coreai_opt.coreai_utils``) applied to the converted program, as coremltools.optimize
is for Core ML. int8 activations are coreai-opt's graph-mode ``Quantizer`` (PT2E underneath):
calibrated in PyTorch, finalized into Core AI quantize/dequantize custom ops that coreai-torch
lowers, with the fake-quantized model as the lowering-fidelity reference.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from edge_export.build.exporter import BuildContext, Prepared, SchemeTable
from edge_export.quant.calibrating import tracked
from edge_export.quant.mechanisms import torch_callable

SCHEMES = SchemeTable()

# The recipe's observer names → coreai-opt's qparams calculators ("static" is plain
# min/max over all calibration samples; "moving_average" is coreai-opt's default).
OBSERVERS = {"minmax": "static", "moving-average": "moving_average"}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coreai-torch, coreai-opt and torchao warn at import about torch versions they were not
    validated with (2.13.0 is their upper bound) and missing CUDA kernels; real errors still raise."""
    logging.getLogger("coreai_opt").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@SCHEMES.register("none")
def float_compute(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """fp32 / fp16: no weight change; the compute precision is a conversion option."""
    return Prepared(program)


# Options of every coreai-opt weight pass: compress every weight tensor (coreai-opt skips
# those under 1024 elements by default; the recipes mean all of them, as on ios).
WEIGHT_OPTIONS: dict[str, Any] = {"weight_num_threshold": 0, "in_place": True}


@SCHEMES.register("linear-weights")
def linear_weights(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """int8 per-channel or int4 per-block weights (``blockwise_shift_scale`` in the program,
    dequantized by the runtime)."""
    def compress(ai_program: Any) -> Any:
        with quiet():
            from coreai_opt.coreai_utils import CompressionGranularity, DType, quantize_weights
            from coreai_opt.coreai_utils.common import QScheme

        granularity = recipe.param("granularity", "per-channel").replace("-", "_").upper()
        return quantize_weights(
            ai_program, DType[f"INT{recipe.param('bits', 8)}"],
            qscheme=QScheme.SYMMETRIC if recipe.param("symmetric", True) else QScheme.ASYMMETRIC,
            granularity=CompressionGranularity[granularity], block_size=recipe.param("block_size", 32),
            **WEIGHT_OPTIONS)

    return Prepared(program, post_convert=compress)


@SCHEMES.register("palettize")
def palettize(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """k-means look-up tables of 2**bits entries per weight tensor."""
    def compress(ai_program: Any) -> Any:
        with quiet():
            from coreai_opt.coreai_utils import CompressionGranularity, palettize_weights

        # One k-means worker: builds run in worker processes already, on few cores.
        return palettize_weights(ai_program, None, n_bits=recipe.param("bits", 4),
                                 granularity=CompressionGranularity.PER_TENSOR, num_kmeans_workers=1,
                                 **WEIGHT_OPTIONS)

    return Prepared(program, post_convert=compress)


@SCHEMES.register("coreai-opt-static")
def static_activations(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """int8 per-channel weights + calibrated int8 per-tensor activations."""
    import torch

    with quiet():
        from coreai_opt.quantization import ModuleQuantizerConfig, QuantizationSpec, Quantizer, QuantizerConfig
        from coreai_opt.quantization.spec.spec import default_weight_quantization_spec

    activations = QuantizationSpec(  # per tensor (the spec's default granularity)
        dtype=torch.int8,
        qscheme="asymmetric" if recipe.param("activation_scheme", "symmetric") == "affine" else "symmetric",
        qparam_calculator_cls=OBSERVERS[recipe.param("observer", "minmax")], range_calculator_cls="minmax")
    # Activations are quantized where ops read them, not where they are written: with outputs
    # quantized too, the model's own output (logits) goes through an int8 grid of its range
    # (digits: 19.7 dB against float; inputs only: 30.1 dB, measured on 64 validation digits).
    config = QuantizerConfig(global_config=ModuleQuantizerConfig(
        op_input_spec={"*": activations}, op_output_spec={"*": None},
        op_state_spec={"weight": default_weight_quantization_spec()}))
    with quiet():
        quantizer = Quantizer(program.module(), config)
        prepared = quantizer.prepare(ctx.example_inputs)
        with quantizer.calibration_mode(), torch.no_grad():
            for sample in tracked(ctx.calibration, "calibrating"):
                prepared(*sample)
        finalized = quantizer.finalize()
    # Its Core AI quantize/dequantize ops run in PyTorch too: the lowering-fidelity reference.
    return Prepared(finalized, reference=torch_callable(finalized))
