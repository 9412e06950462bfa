"""android: ExecuTorch ``.pte`` lowered to the XNNPACK delegate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads with the runtime: target discovery stays light
    import numpy as np

from edge_export.build.exporter import Exporter, Prepared, Runner, Toolchain, package_version

from .decompositions import decompose_for_xnnpack
from .patterns import skip_unmatchable_patterns
from .schemes import SCHEMES


class ExecuTorchExporter(Exporter):
    target = "android"
    artifact_name = "model.pte"
    format = "ExecuTorch .pte (XNNPACK delegate)"
    runtime_name = "executorch"
    schemes = SCHEMES
    toolchain = Toolchain("android", ("executorch", "torchao"))

    def lower(self, prepared: Prepared, recipe: Any, dest: Path) -> None:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        program = decompose_for_xnnpack(prepared.exported())
        with skip_unmatchable_patterns():
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        dest.write_bytes(edge.to_executorch().buffer)

    def preflight(self, program: Any) -> dict[str, list[str]]:
        from .preflight import not_delegated

        return {"not_converted": [], "not_delegated": not_delegated(program)}

    def preload(self) -> None:
        import executorch.kernels.quantized  # noqa: F401
        import executorch.runtime  # noqa: F401
        from executorch.backends.xnnpack.partition import xnnpack_partitioner  # noqa: F401
        from executorch.exir import to_edge_transform_and_lower  # noqa: F401

    def check_runtime(self) -> str:
        from executorch.runtime import Runtime

        Runtime.get()  # loads the pybindings and their kernels
        return self.runtime_name

    def load_runtime(self, artifact: Path, threads: int = 1) -> tuple[str, Runner]:
        import executorch.kernels.quantized  # noqa: F401 - registers q/dq ops left outside XNNPACK
        import numpy as np
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        # XNNPACK's pool is process-wide and defaults to one thread per core, whatever
        # torch's setting: without this, "1 thread" latency ran on every core.
        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)

        method = Runtime.get().load_program(str(artifact)).load_method("forward")

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            outputs = method.execute([torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
            return [o.numpy().copy() for o in outputs]

        return self.runtime_name, run

    def tool_versions(self) -> dict[str, str]:
        return {"torch": package_version("torch"), "executorch": package_version("executorch"),
                "torchao": package_version("torchao")}

    def runtime_requirements(self, recipe: Any) -> dict[str, Any]:
        return {"runtime": "executorch", "version": package_version("executorch"),
                "backends": ["XnnpackBackend"],
                "android_dependency": f"org.pytorch:executorch-android:{package_version('executorch')}",
                "quantized_kernels": recipe.scheme != "none"}
