"""The LLM target plugin hook: one backend per target, found through the
``edge_export.llm_exporters`` entry-point group (pyproject.toml).

A backend turns an eager causal LM into an artifact with a static KV cache of
``max_context`` positions, and runs that artifact on its host runtime as a ``Session``.
Everything else — loading, reference runs, gates, packaging, ``generate`` — is shared,
so a new target (Core ML stateful, LiteRT prefill/decode signatures) adds one module.
"""

from __future__ import annotations

import abc
import importlib.metadata
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_export.errors import UsageError
from edge_export.llm.recipe import LLMRecipe

ENTRY_POINT_GROUP = "edge_export.llm_exporters"


@dataclass(frozen=True)
class ExportSpec:
    """What every backend bakes into its artifact."""

    max_context: int       # KV-cache positions
    max_seq_len: int       # most tokens one prefill call takes
    bos_id: int | None
    eos_ids: list[int]
    vocab_size: int


class Session(Protocol):
    """An artifact loaded on its runtime, holding its KV cache between calls."""

    max_seq_len: int
    max_context: int

    def forward(self, ids: np.ndarray, start: int) -> np.ndarray:
        """Run tokens ``ids`` (int64, shape [n]) at cache positions start..start+n-1 and
        return their logits, float32 [n, vocab]."""


class LLMBackend(abc.ABC):
    target: str
    artifact_name: str
    format: str
    runtime_name: str
    compute_precisions: tuple[str, ...] = ("float32",)  # what a recipe's ``compute`` may ask for
    embedding_quantization: bool = False  # whether the backend honours ``quantize_embeddings``

    def refusal(self, recipe: LLMRecipe) -> str | None:
        """Why this target cannot build ``recipe``, or None when it can."""
        if recipe.compute not in self.compute_precisions:
            return f"{self.target} computes in {' or '.join(self.compute_precisions)} only"
        if recipe.quantize_embeddings and not self.embedding_quantization:
            return f"{self.target} does not quantize the embedding table separately (quantize_embeddings)"
        return None

    def quantize(self, model: Any, recipe: LLMRecipe) -> Any:
        """Quantize ``model`` in place as the artifact will be: the result is both what
        gets exported and the same-quantization PyTorch reference. Default: torchao."""
        from edge_export.llm.quantize import torchao_quantize

        return torchao_quantize(model, recipe)

    @abc.abstractmethod
    def export(self, model: Any, spec: ExportSpec, recipe: LLMRecipe, dest: Path) -> None:
        """Write the artifact for the (already quantized) eager ``model`` to ``dest``.

        A quantized ``model`` is the build's own and its references have run (``build.py``):
        the exporter may ``release_weights`` it once its toolchain holds what it needs."""

    @abc.abstractmethod
    def open_session(self, artifact: Path) -> Session:
        """Load the artifact on the host runtime."""

    @abc.abstractmethod
    def tool_versions(self) -> dict[str, str]:
        ...


def release_weights(model: Any) -> None:
    """Free a consumed model's parameters and buffers in place (moved to the ``meta`` device:
    shapes stay, storage goes), while the build still holds a reference to the module.

    Other references to the weights' storage die with the toolchain's graphs, which sit in
    reference cycles (hence ``gc.collect``) and, for the last graph torch traced, in a module
    global: ``proxy_tensor._FAKE_TENSOR_ID_TO_PROXY_MAP_FOR_EXPORT`` keeps that trace's nodes
    for export's fake-tensor leak detection until the next trace. litert-torch's last trace
    holds real parameters there: without clearing it, the 1.1 B tflite build kept all 4 GB."""
    import gc

    model.to("meta")
    proxy_tensor = sys.modules.get("torch.fx.experimental.proxy_tensor")
    getattr(proxy_tensor, "_FAKE_TENSOR_ID_TO_PROXY_MAP_FOR_EXPORT", {}).clear()
    gc.collect()


@cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def llm_targets() -> list[str]:
    return sorted(_entry_points())


def get_backend(target: str) -> LLMBackend:
    eps = _entry_points()
    if target not in eps:
        raise UsageError(f"no LLM backend for target {target!r}",
                         hint=f"LLM targets: {', '.join(llm_targets()) or 'none installed'}")
    return eps[target].load()()
