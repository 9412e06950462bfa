"""tflite: LiteRT ``.tflite`` via litert-torch, run with the ai-edge-litert interpreter."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads with the runtime: target discovery stays light
    import numpy as np

from edge_export.build.exporter import Exporter, Prepared, Runner, Toolchain, package_version

from .rewrites import rewrite_for_litert
from .schemes import SCHEMES


class LiteRTExporter(Exporter):
    target = "tflite"
    artifact_name = "model.tflite"
    format = "LiteRT flatbuffer (.tflite)"
    runtime_name = "litert"
    schemes = SCHEMES
    toolchain = Toolchain("tflite", ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"))
    # Measured with litert-torch 0.10.0: a dynamic sequence length fails in its int64->int32
    # rewrite of arange, a dynamic batch in its JAX lowering (non-concrete shapes).
    dynamic_dims_refusal = ("litert-torch 0.10 cannot lower dynamic dimensions (its arange rewrite and "
                            "JAX lowering need concrete sizes)")

    def lower(self, prepared: Prepared, recipe: Any, dest: Path) -> None:
        import litert_torch

        program = prepared.program
        module = rewrite_for_litert(program.module() if hasattr(program, "module") else program)
        args = prepared.example_inputs
        with contextlib.redirect_stdout(sys.stderr):  # litert-torch prints progress to stdout
            model = litert_torch.convert(module, args)
        content = bytes(model.model_content())  # the interpreter rejects bytearray
        if prepared.post_convert is not None:
            content = bytes(prepared.post_convert(content))
        dest.write_bytes(content)

    def preflight(self, program: Any) -> dict[str, list[str]]:
        from .preflight import not_lowerable

        return {"not_converted": not_lowerable(program), "not_delegated": []}

    def preload(self) -> None:
        import litert_torch  # noqa: F401
        from ai_edge_litert import interpreter  # noqa: F401

    def check_runtime(self) -> str:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401 - loads the native interpreter

        return self.runtime_name

    def load_runtime(self, artifact: Path, threads: int = 1) -> tuple[str, Runner]:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(artifact), num_threads=threads)
        (key, signature), = interpreter.get_signature_list().items()
        runner = interpreter.get_signature_runner(key)
        in_details = runner.get_input_details()
        names, out_names = signature["inputs"], signature["outputs"]

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            feed = {n: np.asarray(x).astype(in_details[n]["dtype"], copy=False)
                    for n, x in zip(names, inputs, strict=True)}
            out = runner(**feed)
            return [np.asarray(out[n]).copy() for n in out_names]

        return self.runtime_name, run

    def tool_versions(self) -> dict[str, str]:
        return {"torch": package_version("torch"), "litert-torch": package_version("litert-torch"),
                "ai-edge-quantizer": package_version("ai-edge-quantizer")}

    def runtime_requirements(self, recipe: Any) -> dict[str, Any]:
        return {"runtime": "litert", "version": package_version("ai-edge-litert"),
                "android_dependency": "com.google.ai.edge.litert:litert"}
