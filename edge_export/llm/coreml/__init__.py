"""ios: a Core ML stateful ML Program (iOS 18) with ``prefill`` and ``decode`` functions
sharing weights and K/V-cache states.

On Linux the package runs on our MIL reference executor (``runtime: mil-reference``),
which executes ``read_state`` / ``slice_update`` / ``coreml_update_state`` and keeps the
cache in a readable :class:`~edge_export.exporters.coreml.mil.State`; on macOS it runs
with ``MLModel`` and ``make_state()``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.exporter import package_version
from edge_export.llm.backend import ExportSpec, LLMBackend
from edge_export.llm.recipe import LLMRecipe

from .convert import DEFAULT_FUNCTION, INPUTS, OUTPUT


class CoreMLLLM(LLMBackend):
    target = "ios"
    artifact_name = "model.mlpackage"
    format = "Core ML stateful ML Program (.mlpackage, iOS 18; functions prefill and decode, fp16 K/V states)"

    @property
    def runtime_name(self) -> str:  # type: ignore[override]
        return "coreml" if sys.platform == "darwin" else "mil-reference"

    compute_precisions = ("float32", "float16")

    def refusal(self, recipe: LLMRecipe) -> str | None:
        if recipe.activations != "float32":
            return "Core ML has no dynamic activation quantization (weights only: activations = \"float32\")"
        return super().refusal(recipe)

    def quantize(self, model: Any, recipe: LLMRecipe) -> Any:
        """Core ML's own symmetric scheme, reproduced exactly in PyTorch (see ``quantize``)."""
        from .quantize import coreml_fake_quantize

        return coreml_fake_quantize(model, recipe)

    def export(self, model: Any, spec: ExportSpec, recipe: LLMRecipe, dest: Path) -> None:
        from .convert import export_multifunction

        export_multifunction(model, spec, recipe, dest)

    def open_session(self, artifact: Path) -> CoreMLSession:
        return CoreMLSession(artifact)

    def tool_versions(self) -> dict[str, str]:
        return {name: package_version(name) for name in ("torch", "coremltools", "transformers")}


class CoreMLSession:
    """Both functions over one set of states: chunks of ``prefill_tokens`` (the last one
    padded) while they fit in the cache, single tokens through ``decode`` otherwise."""

    def __init__(self, artifact: Path) -> None:
        if sys.platform == "darwin":
            self._functions = {name: _MLModelFunction(artifact, name) for name in ("prefill", "decode")}
            self._state = self._functions[DEFAULT_FUNCTION].new_state()
        else:
            from edge_export.exporters.coreml import mil

            programs = mil.load_functions(artifact, ("prefill", "decode"))
            missing = sorted({op for p in programs.values() for op in p.unsupported_ops()})
            if missing:
                from edge_export.build.exporter import RuntimeUnavailable

                raise RuntimeUnavailable(f"the MIL reference executor lacks op(s) {', '.join(missing)}")
            self._functions = {name: _MILFunction(p) for name, p in programs.items()}
            self._state = programs[DEFAULT_FUNCTION].new_state()
        prefill_shape = self._functions["prefill"].input_shape
        self.prefill_tokens = int(prefill_shape[1])
        self.max_context = int(self._functions["decode"].state_shape[2])
        self.max_seq_len = self.prefill_tokens

    @property
    def state(self) -> Any:
        """The K/V caches (on Linux a readable mapping name -> fp16 array)."""
        return self._state

    def forward(self, ids: np.ndarray, start: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int32)
        logits, done = [], 0
        while done < len(ids):
            position, rest = start + done, len(ids) - done
            if rest > 1 and position + self.prefill_tokens <= self.max_context:
                n = min(rest, self.prefill_tokens)
                chunk = np.zeros(self.prefill_tokens, np.int32)
                chunk[:n] = ids[done:done + n]  # padding writes cache slots that stay masked until overwritten
                out = self._functions["prefill"].run(chunk, position, self._state)[:n]
            else:
                n = 1
                out = self._functions["decode"].run(ids[done:done + 1], position, self._state)
            logits.append(out)
            done += n
        return np.concatenate(logits).astype(np.float32)


class _MILFunction:
    def __init__(self, program: Any) -> None:
        self._program = program
        self.input_shape = program.input_shapes[INPUTS[0]]
        self.state_shape = next(iter(program.state_specs.values())).shape

    def run(self, ids: np.ndarray, start: int, state: Any) -> np.ndarray:
        feeds = {INPUTS[0]: ids[None], INPUTS[1]: np.array([start], np.int32)}
        return self._program.run(feeds, state=state)[OUTPUT][0]


class _MLModelFunction:
    """macOS: one function of the package as an ``MLModel`` (CPU, as parity runs elsewhere)."""

    def __init__(self, artifact: Path, name: str) -> None:
        from edge_export.exporters.coreml.schemes import coremltools

        ct = coremltools()
        self._model = ct.models.MLModel(str(artifact), function_name=name, compute_units=ct.ComputeUnit.CPU_ONLY)
        self.input_shape, self.state_shape = function_shapes(self._model.get_spec(), name)

    def new_state(self) -> Any:
        return self._model.make_state()

    def run(self, ids: np.ndarray, start: int, state: Any) -> np.ndarray:
        feeds = {INPUTS[0]: ids[None].astype(np.int32), INPUTS[1]: np.array([start], np.int32)}
        return np.asarray(self._model.predict(feeds, state=state)[OUTPUT])[0]


def function_shapes(spec: Any, function: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input_ids shape, first state's shape) of one function of a multifunction spec (its
    top-level description is empty: each function carries its own)."""
    description = next(f for f in spec.description.functions if f.name == function)
    ids = next(i for i in description.input if i.name == INPUTS[0])
    return tuple(ids.type.multiArrayType.shape), tuple(description.state[0].type.stateType.arrayType.shape)
