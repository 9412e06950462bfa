"""The exporter plugin interface and the registry filled from entry points.

A target is a class registered under the ``edge_export.exporters`` entry-point
group. The pipeline only talks to this interface, so adding a target is a
``pip install`` away and nothing outside the registry branches on target names.
"""

from __future__ import annotations

import abc
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_export.errors import UsageError

ENTRY_POINT_GROUP = "edge_export.exporters"

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


class RuntimeUnavailable(Exception):
    """The host cannot run this artifact (parity becomes ``not-run`` with this reason)."""


@dataclass
class Prepared:
    """What the quantize stage hands to lower: the program to lower plus, when the
    recipe quantized in PyTorch, a reference that runs the quantized model in PyTorch
    (used to check lowering fidelity)."""

    program: Any
    reference: Callable[..., Any] | None = None
    # Post-conversion compression (Core ML weight compression, LiteRT quantizer):
    # applied by lower() to the converted model object before it is written.
    post_convert: Callable[[Any], Any] | None = None
    # Filled by the pipeline: converters that trace need the inputs, and artifacts name
    # their inputs/outputs as the manifest does (apps feed Core ML features by name).
    example_inputs: tuple[Any, ...] = ()
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()


@dataclass
class BuildContext:
    """Everything a quantize scheme may need besides the program itself."""

    calibration: list[tuple[Any, ...]]  # tuples of torch tensors, one per sample
    reload_module: Callable[[], Any]  # the eager nn.Module (for source-level quantizers)
    example_inputs: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]


Scheme = Callable[[Any, "Any", BuildContext], Prepared]


class SchemeTable:
    """Quantization schemes of one exporter, registered by decorator."""

    def __init__(self) -> None:
        self._schemes: dict[str, Scheme] = {}

    def register(self, name: str) -> Callable[[Scheme], Scheme]:
        def deco(fn: Scheme) -> Scheme:
            self._schemes[name] = fn
            return fn
        return deco

    def __contains__(self, name: str) -> bool:
        return name in self._schemes

    def __getitem__(self, name: str) -> Scheme:
        return self._schemes[name]

    def names(self) -> list[str]:
        return sorted(self._schemes)


class Exporter(abc.ABC):
    target: ClassVar[str]  # the --target name
    artifact_name: ClassVar[str]  # file or directory name inside the package
    format: ClassVar[str]  # human-readable artifact format
    runtime_name: ClassVar[str]  # runtime that parity runs on by default
    schemes: ClassVar[SchemeTable]  # the quantization schemes its recipes may name

    def quantize(self, program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
        """Apply the recipe's scheme (identity for float recipes)."""
        if recipe.scheme not in self.schemes:
            raise UsageError(f"recipe {recipe.name!r} names scheme {recipe.scheme!r}, which "
                             f"target {self.target} does not implement",
                             hint=f"schemes for {self.target}: {', '.join(self.schemes.names())}")
        return self.schemes[recipe.scheme](program, recipe, ctx)

    def preload(self) -> None:
        """Import the toolchain ahead of use: worker processes call this while the main
        process is still loading and exporting the model."""
        return None

    def preflight(self, program: Any) -> dict[str, list[str]]:
        """Predicted problems of lowering ``program``, as op names, for ``edge-export inspect``:
        ``not_converted`` stops the export, ``not_delegated`` runs on slower fallback kernels.
        Empty where the exporter predicts nothing."""
        return {}

    @abc.abstractmethod
    def lower(self, prepared: Prepared, recipe: Any, dest: Path) -> None:
        """Lower to the target format and write the artifact at ``dest``."""

    @abc.abstractmethod
    def load_runtime(self, artifact: Path) -> tuple[str, Runner]:
        """(runtime name, runner) for the host; raise RuntimeUnavailable when it cannot run."""

    @abc.abstractmethod
    def tool_versions(self) -> dict[str, str]:
        """Versions of the libraries that produced the artifact."""

    @abc.abstractmethod
    def runtime_requirements(self, recipe: Any) -> dict[str, Any]:
        """What the app must ship or target to run the artifact (goes in the manifest)."""


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


@cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def target_names() -> list[str]:
    """Registered targets, in a stable order (built-ins first, as the design lists them)."""
    order = {"android": 0, "ios": 1, "tflite": 2}
    return sorted(_entry_points(), key=lambda n: (order.get(n, 99), n))


def get_exporter(target: str) -> Exporter:
    eps = _entry_points()
    if target not in eps:
        raise UsageError(f"unknown target {target!r}",
                         hint=f"choose from {', '.join(target_names())} or all")
    return eps[target].load()()
