"""How each recipe scheme is done for Core ML.

Weight compression (int8/int4 linear, 4-bit palettization) is coremltools.optimize
applied to the converted ML Program; int8 activations go through PT2E with
ExecuTorch's CoreMLQuantizer, whose quantize/dequantize ops survive ct.convert
(coremltools' own activation quantizer calibrates with predict, which is macOS-only).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from edge_export.build.exporter import BuildContext, Prepared, SchemeTable
from edge_export.quant.mechanisms import (
    check_kept_float,
    keep_float_filter,
    keep_float_modules,
    kept_layers,
    maybe_bias_corrected,
    pt2e_float_layers,
    run_pt2e,
    torch_callable,
)

SCHEMES = SchemeTable()

# Recipe observer names → coremltools ObserverType values. Plain min/max is the
# default: coremltools' own default (moving average) lost ~12 dB in our measurements.
OBSERVERS = {"minmax": "min_max", "moving-average": "moving_average_min_max"}


def coremltools() -> Any:
    """Import coremltools without its warnings about untested torch/sklearn versions
    and missing macOS-only native proxies (real errors still raise)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings(), _without(UNUSED_OPTIONAL_DEPS):
        warnings.simplefilter("ignore")
        import coremltools as ct
    return ct


# coremltools probes these at import (~5 s of CPU) for converters we do not use (sklearn,
# Hugging Face, ExecuTorch's edge dialect); they stay importable for everything else.
UNUSED_OPTIONAL_DEPS = ("sklearn", "transformers", "executorch")


# coremltools 9.0's int_op_canonicalization rewrites dequantize -> reshape -> quantize
# into an integer reshape without checking that both ends share scale and zero point.
# PT2E requantizes at a flatten (avg-pool output [0, 6] uint8 zp 0 -> classifier input
# zp 128), so the pass silently reinterprets the codes: EfficientNet-Lite0 int8-static
# fell to -11 dB. Without it, the reshape stays a float op between the two (correct).
UNSAFE_PASSES = ("common::int_op_canonicalization",)


def conversion_pipeline() -> Any:
    """coremltools' default pass pipeline minus the passes that are wrong for PT2E graphs."""
    pipeline = coremltools().PassPipeline.DEFAULT
    pipeline.remove_passes(UNSAFE_PASSES)
    return pipeline


@contextlib.contextmanager
def _without(names: tuple[str, ...]) -> Iterator[None]:
    """Make ``import name`` fail for modules not loaded yet, for the duration."""
    blocked = [n for n in names if n not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment] - the documented import block
    try:
        yield
    finally:
        for name in blocked:
            sys.modules.pop(name, None)


@SCHEMES.register("none")
def float_compute(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """fp32 / fp16: no weight change; the compute precision is a conversion option."""
    return Prepared(program)


@SCHEMES.register("linear-weights", keep_float=True)
def linear_weights(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """int8 per-channel or int4 per-block weights (dequantized on load by Core ML); the
    weights of ``keep_float`` modules stay float."""
    kept = keep_float_modules(recipe.param("keep_float", []), program.module())
    covered = kept_layers(recipe.param("keep_float", []), program.module())

    def compress(mlmodel: Any) -> Any:
        cto = coremltools().optimize.coreml
        granularity = recipe.param("granularity", "per-channel").replace("-", "_")
        options = {"block_size": recipe.param("block_size")} if granularity == "per_block" else {}
        config = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric" if recipe.param("symmetric", True) else "linear",
            dtype=f"int{recipe.param('bits', 8)}", granularity=granularity,
            weight_threshold=0, **options)
        compressed = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(
            global_config=config, op_type_configs=dict.fromkeys(ELEMENTWISE_OPS),
            op_name_configs=dict.fromkeys(kept_weight_names(mlmodel, kept))))
        if covered:
            check_kept_float(covered, _float_weight_layers(compressed), "ios")
        return compressed

    return Prepared(program, post_convert=compress)


def _float_weight_layers(mlmodel: Any) -> Callable[[str], bool]:
    """Whether a layer (module path) still has plain float weights in the ML Program: a
    ``const`` named after its parameters (``kept_weight_names``) and no ``constexpr_*``
    (compressed) one."""
    ops = [(op.op_type, op.name) for function in mlmodel._mil_program.functions.values()
           for op in function.operations if op.op_type == "const" or op.op_type.startswith("constexpr")]

    def is_float(layer: str) -> bool:
        prefix = f"p_{layer.replace('.', '_')}_"
        kinds = {kind == "const" for kind, name in ops if name.startswith(prefix)}
        return kinds == {True}

    return is_float


def kept_weight_names(mlmodel: Any, modules: list[str]) -> list[str]:
    """The MIL constants holding the parameters of ``modules`` (and of their children).
    coremltools names a torch.export parameter ``p_<path with dots as underscores>_<name>``
    (``_to_fp16`` appended when cast), e.g. ``p_encoder_layer_5_attention_self_value_weight``."""
    if not modules:
        return []
    prefixes = tuple(f"p_{module.replace('.', '_')}_" for module in modules)
    names = coremltools().optimize.coreml.get_weights_metadata(mlmodel, weight_threshold=0)
    return [name for name in names if name.startswith(prefixes)]


# Constants that feed elementwise ops are not layer weights: a transformer's position and
# token-type embedding slices are (1, seq, hidden) constants added to the token embedding,
# and coremltools compresses them with one per-tensor scale (no block structure applies).
# On all-MiniLM-L6-v2 that alone took int4-weight from cosine 0.954 to 0.794.
ELEMENTWISE_OPS = ("add", "sub", "mul", "real_div")


@SCHEMES.register("palettize")
def palettize(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """k-means look-up tables of 2**bits entries per weight tensor."""
    def compress(mlmodel: Any) -> Any:
        cto = coremltools().optimize.coreml
        config = cto.OpPalettizerConfig(mode=recipe.param("palette", "kmeans"),
                                        nbits=recipe.param("bits", 4), granularity="per_tensor",
                                        weight_threshold=0)
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=config))

    return Prepared(program, post_convert=compress)


@SCHEMES.register("pt2e-coreml", keep_float=True)
def pt2e_coreml(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """int8 weights + calibrated int8 activations (quantize/dequantize in the ML Program)."""
    import torch

    ct = coremltools()
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    observer = OBSERVERS[recipe.param("observer", "minmax")]
    qt = ct.optimize.torch.quantization
    config = qt.LinearQuantizerConfig(global_config=qt.ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric" if recipe.param("symmetric", True) else "affine",
        activation_dtype=torch.quint8, weight_dtype=torch.qint8,
        weight_per_channel=recipe.param("granularity", "per-channel") == "per-channel",
        activation_observer=observer),
        # None: CoreMLQuantizer leaves every node under that module path unannotated (float).
        module_name_configs=dict.fromkeys(
            keep_float_modules(recipe.param("keep_float", []), program.module())))
    covered = kept_layers(recipe.param("keep_float", []), program.module())
    # CoreMLQuantizer's qint8 weights: symmetric per-channel over [-128, 127].
    keep = keep_float_filter(recipe.param("keep_float", []), program.module())  # float layers: no correction
    program = maybe_bias_corrected(program, recipe, ctx.calibration, (-128, 127), keep)
    quantizer = CoreMLQuantizer(config)
    if recipe.param("activation_scheme", "symmetric") == "affine":
        quantizer = _affine_activations(quantizer)
    with _fast_pattern_tracing():
        quantized = run_pt2e(program, quantizer, ctx.calibration)
    check_kept_float(covered, pt2e_float_layers(quantized).__contains__, "ios")
    return Prepared(quantized, reference=torch_callable(quantized))


def _affine_activations(quantizer: Any) -> Any:
    """CoreMLQuantizer with every symmetric uint8 activation made affine (weights stay
    symmetric). coremltools' one ``quantization_scheme`` sets both; with "symmetric" a
    non-negative or lopsided tensor (a projection conv's output, a residual sum, the model
    input) spends half of its 256 codes on values it never takes. coremltools already
    makes ReLU/ReLU6 outputs affine for that reason; this extends it to all activations."""
    import dataclasses

    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    def affine(spec: Any) -> Any:
        if (isinstance(spec, QuantizationSpec) and spec.qscheme == torch.per_tensor_symmetric
                and spec.dtype in (torch.uint8, torch.quint8)):
            return dataclasses.replace(spec, qscheme=torch.per_tensor_affine)
        return spec

    annotate = quantizer.annotate

    def annotate_affine(model: Any) -> Any:
        model = annotate(model)
        for node in model.graph.nodes:
            annotation = node.meta.get("quantization_annotation")
            if annotation is not None:
                annotation.input_qspec_map = {k: affine(v) for k, v in annotation.input_qspec_map.items()}
                annotation.output_qspec = affine(annotation.output_qspec)
        return model

    quantizer.annotate = annotate_affine
    return quantizer


@contextlib.contextmanager
def _fast_pattern_tracing() -> Iterator[None]:
    """CoreMLQuantizer traces ~100 small match patterns with strict (dynamo) export,
    which costs 70-150 s per model on 2 cores. Non-strict export yields the same
    pattern graphs (we checked: identical quantized graph) in ~10 s; the model itself
    is exported non-strict too, so matching sees the same op forms."""
    import torch
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils

    def trace(pattern: Any, example_inputs: tuple, is_cuda: bool = False) -> Any:
        graph = torch.export.export(pattern, example_inputs, strict=False).module()
        graph.graph.eliminate_dead_code()
        graph.recompile()
        return graph

    original = utils._get_aten_graph_module
    utils._get_aten_graph_module = trace
    try:
        yield
    finally:
        utils._get_aten_graph_module = original
