"""How each recipe scheme is done for LiteRT: ai-edge-quantizer (AEQ) recipes applied
to the converted flatbuffer.

Static int8 keeps float inputs/outputs (NO_QUANTIZE on the virtual INPUT/OUTPUT ops)
and calibrates with plain min/max: AEQ's default moving-average update under-estimates
activation ranges (15-19 dB vs 30-40 dB SNR in our measurements).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from edge_export.build.exporter import BuildContext, Prepared, SchemeTable
from edge_export.quant.mechanisms import keep_float_filter, maybe_bias_corrected

SCHEMES = SchemeTable()

# Recipe (activations, bits, granularity) → AEQ's named recipe for the weight schemes.
AEQ_RECIPES = {
    ("dynamic", 8, "per-channel"): "dynamic_wi8_afp32",
    ("float", 8, "per-channel"): "weight_only_wi8_afp32",
    ("float", 4, "per-channel"): "weight_only_wi4_afp32",
    ("dynamic", 4, "per-block"): "dynamic_wi4b32_afp32",
}


@SCHEMES.register("none")
def float32(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    return Prepared(program)


@SCHEMES.register("aeq-float16")
def float16_weights(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    def recipe_fn() -> Any:
        from ai_edge_quantizer import qtyping, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*",
                                       operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        return manager.get_quantization_recipe()

    return Prepared(program, post_convert=_quantize_with(recipe_fn))


@SCHEMES.register("aeq-weights", keep_float=True)
def aeq_weights(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """Dynamic / weight-only recipes: AEQ's named recipe for the declared parameters, with
    NO_QUANTIZE on the ops of the ``keep_float`` modules."""
    key = (recipe.param("activations", "float"), recipe.param("bits", 8),
           recipe.param("granularity", "per-channel"))
    name = AEQ_RECIPES[key]
    keep = recipe.param("keep_float", [])
    keep_regexes = scope_regexes(keep, program.module())
    check = _kept_float_check(keep, program.module())

    def quantize(model: bytes) -> bytes:
        from ai_edge_quantizer import qtyping, quantizer, recipe_manager
        from ai_edge_quantizer import recipe as aeq_recipes
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(getattr(aeq_recipes, name)())
        for regex in keep_float_scopes(model, keep_regexes):  # last: the latest match wins
            manager.add_quantization_config(regex=regex,
                                            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        result = quantizer.Quantizer(model, manager.get_quantization_recipe()).quantize(
            enable_progress_report=False)
        return check(bytes(result.quantized_model))

    return Prepared(program, post_convert=quantize)


@SCHEMES.register("aeq-static", keep_float=True)
def aeq_static(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """Calibrated int8 weights and activations, float32 model inputs/outputs; ops of the
    ``keep_float`` modules are left float (NO_QUANTIZE on their scope)."""
    keep_regexes = scope_regexes(recipe.param("keep_float", []), program.module())
    check = _kept_float_check(recipe.param("keep_float", []), program.module())

    def quantize(model: bytes) -> bytes:
        from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.utils import qsv_utils

        ops = qtyping.TFLOperationName
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(regex=".*", operation_name=ops.ALL_SUPPORTED,
                                  activation_num_bits=8, weight_num_bits=8)
        for virtual in (ops.INPUT, ops.OUTPUT):
            manager.add_quantization_config(regex=".*", operation_name=virtual,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        for regex in keep_float_scopes(model, keep_regexes):  # last: the latest match wins
            manager.add_quantization_config(regex=regex, operation_name=ops.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        qt = quantizer.Quantizer(model, manager.get_quantization_recipe())
        update = (qsv_utils.min_max_update if recipe.param("observer", "minmax") == "minmax"
                  else qsv_utils.moving_average_update)
        cal = calibrator.Calibrator(model, num_threads=1, qsv_update_func=update)
        names = _signature_inputs(model)
        feeds = [dict(zip(names, (t.numpy() for t in sample), strict=True))
                 for sample in ctx.calibration]
        cal.calibrate({"serving_default": feeds}, qt._recipe_manager)
        return check(bytes(qt.quantize(cal.get_model_qsvs(), enable_progress_report=False).quantized_model))

    # AEQ's int8 weights are symmetric narrow-range: [-127, 127].
    keep = keep_float_filter(recipe.param("keep_float", []), program.module())  # float layers: no correction
    program = maybe_bias_corrected(program, recipe, ctx.calibration, (-127, 127), keep)
    return Prepared(program, post_convert=quantize)


def scope_regexes(patterns: list[str], graph_module: Any) -> list[str]:
    """Regexes for the tensor names of the modules ``patterns`` match.

    litert-torch names each tensor by the module hierarchy of the node that produced it
    (``Root/Type_attr/Type_attr;``, litert_torch/backend/debuginfo/_build.py; fused ops
    join their nodes' names with ``;``), so a module's hierarchy string, at a name
    boundary and followed by ``/`` (a child) or ``;`` (the module itself), names exactly
    that module's tensors."""
    from edge_export.quant.mechanisms import keep_float_modules, module_stacks

    stacks = module_stacks(graph_module)
    regexes = []
    for path in keep_float_modules(patterns, graph_module):
        hierarchy = "/".join(_type_name(kind) + (f"_{name.split('.')[-1]}" if name else "")
                             for name, kind in stacks[path])
        regexes.append(f"(?:^|;){re.escape(hierarchy)}[/;]")
    return regexes


def _kept_float_check(patterns: list[str], graph_module: Any) -> Callable[[bytes], bytes]:
    """The quantized flatbuffer, once every layer ``patterns`` keeps float is float in it: each
    has ops (named as ``keep_float_scopes`` finds them) and none holds an integer constant.
    A layer whose tensor names match no op would otherwise be quantized without a word."""
    from edge_export.quant.mechanisms import check_kept_float, kept_layers

    covered = kept_layers(patterns, graph_module)
    regexes = {layer: scope_regexes([layer], graph_module) for layers in covered.values() for layer in layers}

    def check(model: bytes) -> bytes:
        if covered:
            flat_ops = _ops_by_names(model)
            check_kept_float(covered, lambda layer: _all_float(flat_ops, regexes[layer]), "tflite")
        return model

    return check


def _ops_by_names(model: bytes) -> list[tuple[list[str], bool, str]]:
    """Every op of the model: (the names it is matched by, whether none of its constants is
    quantized, its AEQ scope). AEQ matches an op by its output tensor names, but a layer feeding
    a model output has its output named after the signature (``serving_default_output_0``);
    so an op belongs to a module when its outputs *or its constant inputs* (weights, bias)
    carry the module's name - never its activation inputs, which name the layer before it."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    flat = tfl.read_model(model)
    found = []
    for subgraph in flat.subgraphs:
        tensors = subgraph.tensors
        for op in subgraph.operators:
            const = [i for i in op.inputs if i != -1 and _is_constant(flat, tensors[i])]
            names = [tfl.get_tensor_name(tensors[i]) + ";" for i in [*op.outputs, *const] if i != -1]
            found.append((names, not any(_quantized(tensors[i]) for i in const), tfl.get_op_scope(op, tensors)))
    return found


def _quantized(tensor: Any) -> bool:
    """A constant with quantization scales (int weights, int32 static bias); integer shape or
    permutation constants carry none."""
    params = tensor.quantization
    return params is not None and params.scale is not None and len(params.scale) > 0


def _matches(names: list[str], name_regexes: list[str]) -> bool:
    return any(re.search(rx, n) for rx in name_regexes for n in names)


def _all_float(ops: list[tuple[list[str], bool, str]], name_regexes: list[str]) -> bool:
    mine = [is_float for names, is_float, _scope in ops if _matches(names, name_regexes)]
    return bool(mine) and all(mine)


def keep_float_scopes(model: bytes, name_regexes: list[str]) -> list[str]:
    """AEQ recipe regexes (exact op scopes) for the ops of the kept modules (see ``_ops_by_names``)."""
    if not name_regexes:
        return []
    scopes: list[str] = []
    for names, _is_float, scope in _ops_by_names(model):
        regex = f"^{re.escape(scope)}$"
        if _matches(names, name_regexes) and regex not in scopes:
            scopes.append(regex)
    return scopes


def _is_constant(flat: Any, tensor: Any) -> bool:
    data = flat.buffers[tensor.buffer].data if tensor.buffer < len(flat.buffers) else None
    return data is not None and len(data) > 0


def _type_name(kind: Any) -> str:
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def _quantize_with(recipe_fn: Callable[[], Any]) -> Callable[[bytes], bytes]:
    def quantize(model: bytes) -> bytes:
        from ai_edge_quantizer import quantizer

        result = quantizer.Quantizer(model, recipe_fn()).quantize(enable_progress_report=False)
        return bytes(result.quantized_model)

    return quantize


def _signature_inputs(model: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=model).get_signature_list()
    return list(signatures["serving_default"]["inputs"])
