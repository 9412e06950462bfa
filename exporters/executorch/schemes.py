"""How each recipe scheme is done for ExecuTorch/XNNPACK.

int8 uses PT2E with the XNNPACKQuantizer (per-channel symmetric weights; static
activations calibrated with XNNPACK's default histogram observer, or dynamic; conv ->
ReLU6 annotated as one fused op, see quantizer.py), and
8da4w uses torchao's quantize_ on the eager module. Weight-only int8/int4 are refused
in the recipe files: XNNPACK lowers them but computes wrong outputs (measured).
"""

from __future__ import annotations

import copy
from typing import Any

from edge_export.build.exporter import BuildContext, Prepared, SchemeTable
from edge_export.errors import UsageError
from edge_export.quant.mechanisms import (
    check_kept_float,
    eager_float,
    keep_float_filter,
    keep_float_modules,
    kept_layers,
    maybe_bias_corrected,
    pt2e_float_layers,
    run_pt2e,
    torch_callable,
)

from .quantizer import fused_clamp_quantizer, requantize_float_pads, unfloored_dynamic_ranges

SCHEMES = SchemeTable()


@SCHEMES.register("none")
def float32(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    return Prepared(program)


@SCHEMES.register("pt2e-xnnpack", keep_float=True)
def pt2e_xnnpack(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config,
    )

    dynamic = recipe.param("activations") == "dynamic"
    if recipe.param("observer", "histogram") != "histogram":
        raise UsageError(f"recipe {recipe.name}: android calibrates with XNNPACK's histogram "
                         "observer only", hint="set observer = \"histogram\" or remove the key")
    config = get_symmetric_quantization_config(
        is_per_channel=recipe.param("granularity", "per-channel") == "per-channel",
        is_dynamic=dynamic)
    quantizer = fused_clamp_quantizer().set_global(config)  # conv -> ReLU6 observed once
    covered = kept_layers(recipe.param("keep_float", []), program.module())
    keep = keep_float_filter(recipe.param("keep_float", []), program.module())
    if keep is not None:
        quantizer.set_filter_function(keep)
    # Dynamic quantization computes ranges at run time; one pass just traces observers.
    samples = ctx.calibration if not dynamic else [ctx.example_inputs]
    if not dynamic:  # XNNPACK's int8 weights are symmetric in [-127, 127]
        program = maybe_bias_corrected(program, recipe, samples, (-127, 127), keep)
    quantized = run_pt2e(program, quantizer, samples)
    check_kept_float(covered, pt2e_float_layers(quantized).__contains__, "android")
    if dynamic:
        quantized = unfloored_dynamic_ranges(quantized)
    if keep is not None:
        quantized = requantize_float_pads(quantized)
    return Prepared(quantized, reference=torch_callable(quantized))


@SCHEMES.register("torchao-8da4w", keep_float=True)
def torchao_8da4w(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """int8 dynamic activations + int4 grouped weights on Linear layers (torchao)."""
    import torch
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    if ctx.user_module is not None:  # a torchao 8da4w model: lowered as the user quantized it
        module = ctx.user_module()
        return Prepared(module, reference=torch_callable(module))
    module = copy.deepcopy(ctx.reload_module())
    group = recipe.param("block_size", 32)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not any(m.in_features % group == 0 for m in linears):
        raise UsageError(f"recipe {recipe.name}: no Linear layer has in_features divisible by "
                         f"the group size {group}", hint="use int8-dynamic for this model")
    covered = kept_layers(recipe.param("keep_float", []), program.module())
    keep = keep_float_modules(recipe.param("keep_float", []), program.module())

    def chosen(m: Any, fqn: str) -> bool:
        kept = any(fqn == k or fqn.startswith(k + ".") for k in keep)
        return isinstance(m, torch.nn.Linear) and m.in_features % group == 0 and not kept

    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                           weight_granularity=PerGroup(group)),
              filter_fn=chosen)
    check_kept_float(covered, lambda layer: eager_float(module, layer), "android")
    return Prepared(module, reference=torch_callable(module))
