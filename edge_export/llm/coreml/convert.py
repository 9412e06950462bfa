"""torch.export -> coremltools -> one multifunction ``.mlpackage`` (``prefill`` + ``decode``).

Each function is the same ``StatefulLM`` exported at a fixed token count (``prefill``:
``max_seq_len`` tokens, shorter chunks padded; ``decode``: 1 token), converted with the
K/V caches as fp16 ``ct.StateType`` states (Core ML 9 refuses any other state dtype:
"State only support fp16 dtype"), weight-quantized while converting (the quantized model
carries its scales as compression info, ``quantize.COMPRESSION``), and merged with
``ct.utils.save_multifunction``, which stores the weights the two functions share once.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.llm.backend import ExportSpec, release_weights
from edge_export.llm.recipe import LLMRecipe

FUNCTIONS = ("prefill", "decode")
DEFAULT_FUNCTION = "decode"
INPUTS = ("input_ids", "start")
OUTPUT = "logits"


def function_tokens(spec: ExportSpec) -> dict[str, int]:
    return {"prefill": spec.max_seq_len, "decode": 1}


def convert_function(model: Any, tokens: int, spec: ExportSpec, recipe: LLMRecipe) -> Any:
    """One function of the package as an in-memory ``MLModel`` (not loadable on Linux)."""
    import torch

    from edge_export.exporters.coreml import drop_volatile_metadata
    from edge_export.exporters.coreml.decompositions import decompose_for_coreml
    from edge_export.exporters.coreml.schemes import conversion_pipeline, coremltools
    from edge_export.llm.coreml.wrapper import StatefulLM, cache_names

    ct = coremltools()
    wrapper = StatefulLM(model, spec.max_context, torch.float16).eval()
    example = (torch.full((1, tokens), spec.bos_id or 0, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
    with torch.no_grad():
        program = decompose_for_coreml(torch.export.export(wrapper, example))
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=wrapper.cache_shape, dtype=np.float16), name=name)
              for name in cache_names(wrapper.layers)]
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name=INPUTS[0], shape=(1, tokens), dtype=np.int32),
                ct.TensorType(name=INPUTS[1], shape=(1,), dtype=np.int32)],
        outputs=[ct.TensorType(name=OUTPUT)], states=states, convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if recipe.compute == "float16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS18, skip_model_load=True, pass_pipeline=conversion_pipeline())
    del program
    drop_volatile_metadata(mlmodel)
    return mlmodel


def export_multifunction(model: Any, spec: ExportSpec, recipe: LLMRecipe, dest: Path) -> None:
    from edge_export.exporters.coreml import stabilise_package
    from edge_export.exporters.coreml.schemes import coremltools

    ct = coremltools()
    work = Path(tempfile.mkdtemp(prefix="coreml-llm-", dir=dest.parent))
    try:
        descriptor = ct.utils.MultiFunctionDescriptor()
        for name, tokens in function_tokens(spec).items():
            path = work / f"{name}.mlpackage"
            mlmodel = convert_function(model, tokens, spec, recipe)
            mlmodel.save(str(path))
            del mlmodel
            descriptor.add_function(str(path), src_function_name="main", target_function_name=name)
        if recipe.quantized:  # the build's own model, fully converted: 4 GB less for a 1.1 B merge
            release_weights(model)
        descriptor.default_function_name = DEFAULT_FUNCTION
        ct.utils.save_multifunction(descriptor, str(dest))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write_metadata(dest, _metadata(spec))  # save_multifunction keeps no user metadata
    stabilise_package(dest)


def _write_metadata(package: Path, metadata: dict[str, str]) -> None:
    from coremltools.proto import Model_pb2

    for path in package.rglob("*.mlmodel"):
        model = Model_pb2.Model()
        model.ParseFromString(path.read_bytes())
        model.description.metadata.userDefined.update(metadata)
        path.write_bytes(model.SerializeToString())


def _metadata(spec: ExportSpec) -> dict[str, str]:
    """What an app needs to drive the functions, readable from the model itself."""
    return {"edge_export.max_context": str(spec.max_context), "edge_export.prefill_tokens": str(spec.max_seq_len),
            "edge_export.vocab_size": str(spec.vocab_size)}
