"""ios: Core ML ML Program ``.mlpackage`` via coremltools.

Parity runs with ``MLModel.predict`` on macOS and, elsewhere, with our numpy
reference executor for ML Programs (``mil``), and the runtime name says which.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads with the runtime: target discovery stays light
    import numpy as np

from edge_export.build.exporter import Exporter, Prepared, Runner, RuntimeUnavailable, Toolchain, package_version

from .decompositions import decompose_for_coreml
from .schemes import SCHEMES, conversion_pipeline, coremltools

VOLATILE_METADATA = ("com.github.apple.coremltools.conversion_date",)


class CoreMLExporter(Exporter):
    target = "ios"
    artifact_name = "model.mlpackage"
    format = "Core ML ML Program (.mlpackage)"
    runtime_name = "coreml"
    schemes = SCHEMES
    # executorch: the int8-static recipe quantizes with its CoreMLQuantizer (PT2E via torchao)
    toolchain = Toolchain("ios", ("coremltools", "executorch", "torchao"))

    def lower(self, prepared: Prepared, recipe: Any, dest: Path) -> None:
        ct = coremltools()
        precision = recipe.param("compute_precision", "float32")
        program = decompose_for_coreml(prepared.exported())  # what coremltools lacks, nothing it fuses
        mlmodel = ct.convert(
            program,
            inputs=[ct.TensorType(name=n, shape=_shape(ct, t, spec), dtype=_input_dtype(t))
                    for n, t, spec in zip(prepared.input_names, prepared.example_inputs,
                                          prepared.input_specs or [None] * len(prepared.input_names),
                                          strict=True)],
            outputs=[ct.TensorType(name=n) for n in prepared.output_names],
            convert_to="mlprogram",
            compute_precision=(ct.precision.FLOAT16 if precision == "float16"
                               else ct.precision.FLOAT32),
            minimum_deployment_target=getattr(ct.target, recipe.minimum_deployment or "iOS17"),
            skip_model_load=True,
            pass_pipeline=conversion_pipeline(),
        )
        if prepared.post_convert is not None:
            mlmodel = prepared.post_convert(mlmodel)
        drop_volatile_metadata(mlmodel)
        mlmodel.save(str(dest))
        stabilise_package(dest)

    def preflight(self, program: Any) -> dict[str, list[str]]:
        from .preflight import not_convertible

        return {"not_converted": not_convertible(program), "not_delegated": []}

    def preload(self) -> None:
        coremltools()
        if sys.platform != "darwin":
            from . import mil  # noqa: F401

    def check_runtime(self) -> str:
        if sys.platform == "darwin":  # what MLModel.predict runs on; coremltools logs, not raises, without it
            from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401

            return "coreml"
        from . import mil  # noqa: F401 - the reference executor and its kernels

        return "mil-reference"

    def load_runtime(self, artifact: Path, threads: int = 1) -> tuple[str, Runner]:
        import numpy as np

        if sys.platform == "darwin":  # Core ML schedules its own threads: not settable
            return "coreml", _coreml_runner(artifact)
        from edge_export.verify.latency import limit_threads

        from . import mil

        limit_threads(threads)  # numpy's BLAS/OpenMP pools run the reference executor

        program = mil.load(artifact)
        missing = program.unsupported_ops()
        if missing:
            raise RuntimeUnavailable(
                "Core ML prediction needs macOS and the Linux reference executor does not "
                f"cover op type(s): {', '.join(missing)}")

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            out = program.run(dict(zip(program.input_names, inputs, strict=True)))
            return [np.asarray(out[name]) for name in program.output_names]

        return "mil-reference", run

    def tool_versions(self) -> dict[str, str]:
        return {"torch": package_version("torch"), "coremltools": package_version("coremltools")}

    def runtime_requirements(self, recipe: Any) -> dict[str, Any]:
        return {"runtime": "coreml", "minimum_deployment_target": recipe.minimum_deployment
                or "iOS17", "model_type": "mlprogram",
                "compute_precision": recipe.param("compute_precision", "float32")}


def _input_dtype(example: Any) -> Any:
    """int32 for integer inputs (token ids, masks, indices), None (coremltools' default)
    for float ones.

    With fp16 compute on iOS16+, coremltools declares every input whose dtype is not given
    as FLOAT16, integer ones included: token ids above 2048 then arrive rounded to fp16's
    grid (8775 -> 8776), so a text model looks up the wrong embedding rows. That, not fp16
    arithmetic, is what took all-MiniLM-L6-v2 to cosine 0.27 in every fp16-compute recipe.
    Float inputs keep the fp16 I/O that Core ML prefers."""
    import numpy as np
    import torch

    if not isinstance(example, torch.Tensor) or example.dtype.is_floating_point or example.dtype == torch.bool:
        return None  # bool: 0/1 are exact in fp16
    return np.int32


def _shape(ct: Any, example: Any, spec: Any) -> Any:
    """The example's shape, with a ``RangeDim`` at each declared dynamic dimension."""
    shape: list[Any] = list(example.shape)
    for d in getattr(spec, "dynamic", ()):
        shape[d.dim] = ct.RangeDim(lower_bound=d.min, upper_bound=d.max, default=shape[d.dim])
    return ct.Shape(shape) if spec is not None and spec.dynamic else tuple(shape)


def _coreml_runner(artifact: Path) -> Runner:
    import numpy as np

    ct = coremltools()
    model = ct.models.MLModel(str(artifact), compute_units=ct.ComputeUnit.CPU_ONLY)
    spec = model.get_spec()
    in_names = [i.name for i in spec.description.input]
    out_names = [o.name for o in spec.description.output]

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = model.predict(dict(zip(in_names, inputs, strict=True)))
        return [np.asarray(out[name]) for name in out_names]

    return run


def drop_volatile_metadata(mlmodel: Any) -> None:
    for key in VOLATILE_METADATA:  # wall-clock data would make packages non-reproducible
        mlmodel.user_defined_metadata.pop(key, None)


def stabilise_package(package: Path) -> None:
    """Make a saved ``.mlpackage`` byte-reproducible: deterministic spec serialisation and
    package item names derived from paths (shared with the LLM backend)."""
    _stabilise_manifest(package)
    _stabilise_spec(package)


def _stabilise_spec(package: Path) -> None:
    """Protobuf writes map fields (op attributes, metadata) in hash order, which differs
    from process to process; rewrite the spec with sorted maps."""
    from coremltools.proto import Model_pb2

    for path in package.rglob("*.mlmodel"):
        spec = Model_pb2.Model()
        spec.ParseFromString(path.read_bytes())
        path.write_bytes(spec.SerializeToString(deterministic=True))


def _stabilise_manifest(package: Path) -> None:
    """coremltools names package items with random UUIDs; derive them from the item path."""
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed, root = {}, manifest.get("rootModelIdentifier")
    for old_id, item in manifest["itemInfoEntries"].items():
        new_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "edge-export:" + item["path"])).upper()
        renamed[new_id] = item
        if old_id == root:
            manifest["rootModelIdentifier"] = new_id
    manifest["itemInfoEntries"] = dict(sorted(renamed.items()))
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
