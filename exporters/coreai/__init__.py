"""coreai: Apple Core AI ``.aimodel`` via coreai-torch, compressed with coreai-opt.

Parity runs on Apple's own Core AI runtime (``coreai.runtime``), which coreai-core ships
for Linux x86-64 as well as macOS: never on an executor of ours.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edge_export.build.exporter import Exporter, Prepared, Runner, RuntimeUnavailable, Toolchain, package_version

from .runtime import FUNCTION
from .schemes import SCHEMES, quiet


class CoreAIExporter(Exporter):
    target = "coreai"
    artifact_name = "model.aimodel"
    format = "Core AI model (.aimodel)"
    runtime_name = "coreai"
    schemes = SCHEMES
    toolchain = Toolchain("coreai", ("coreai-torch", "coreai-core", "coreai-opt"))

    def lower(self, prepared: Prepared, recipe: Any, dest: Path) -> None:
        with quiet():
            from .convert import save, to_program
            from .pt2e import as_coreai_ops, has_pt2e_ops

            program = prepared.exported()
            if has_pt2e_ops(program):  # a model the user quantized with PT2E (recipe prequantized)
                program = dataclasses.replace(prepared, program=as_coreai_ops(program)).exported()
            program = to_program(program, prepared.input_names, prepared.output_names,
                                 recipe.param("compute_precision", "float32"))
            if prepared.post_convert is not None:
                program = prepared.post_convert(program)
        save(program, dest)

    def preflight(self, program: Any) -> dict[str, list[str]]:
        with quiet():
            from .convert import not_lowerable

            return {"not_converted": not_lowerable(program), "not_delegated": []}

    def preload(self) -> None:
        with quiet():
            import coreai.runtime  # noqa: F401
            import coreai_opt  # noqa: F401
            import coreai_torch  # noqa: F401

    def check_runtime(self) -> str:
        import coreai.runtime  # noqa: F401 - loads Apple's native runtime (Linux x86-64, macOS)

        return self.runtime_name

    def load_runtime(self, artifact: Path, threads: int = 1) -> tuple[str, Runner]:
        """Core AI schedules its own threads (the runtime exposes no setting), as Core ML does."""
        from .runtime import CoreAIRunner

        try:
            runner = CoreAIRunner(artifact)
        except ValueError as exc:
            raise RuntimeUnavailable(str(exc)) from None
        return self.runtime_name, runner

    def tool_versions(self) -> dict[str, str]:
        return {"torch": package_version("torch"), "coreai-torch": package_version("coreai-torch"),
                "coreai-core": package_version("coreai-core"), "coreai-opt": package_version("coreai-opt")}

    def runtime_requirements(self, recipe: Any) -> dict[str, Any]:
        """``minimum_os``: the only OS version coreai-core 1.0.0b3 serializes assets for
        (``AIProgram.save_asset``'s ``OSVersion.v27``, its sole value)."""
        return {"runtime": "coreai", "version": package_version("coreai-core"), "function": FUNCTION,
                "minimum_os": "27", "compute_precision": recipe.param("compute_precision", "float32")}
