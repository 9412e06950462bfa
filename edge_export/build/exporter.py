"""The exporter plugin interface and the registry filled from entry points.

A target is a class registered under the ``edge_export.exporters`` entry-point
group. The pipeline only talks to this interface, so adding a target is a
``pip install`` away and nothing outside the registry branches on target names.
"""

from __future__ import annotations

import abc
import importlib.metadata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edge_export.errors import UsageError

if TYPE_CHECKING:  # numpy is not imported at start: a warm re-run never needs it
    import numpy as np

ENTRY_POINT_GROUP = "edge_export.exporters"

Runner = Callable[[Sequence["np.ndarray"]], list["np.ndarray"]]


class RuntimeUnavailable(Exception):
    """The host cannot run this artifact (parity becomes ``not-run`` with this reason)."""


class ToolchainMissing(UsageError):
    """A registered target whose toolchain is not installed (exit 2, naming the pip command)."""


@dataclass(frozen=True)
class Toolchain:
    """What a target needs beyond the core install, as data: the distributions (pip names)
    and the extra of ``project`` that installs them. The registry checks them in the
    installed metadata, so availability is known without importing the toolchain."""

    extra: str
    distributions: tuple[str, ...]
    project: str = "edge-export"

    @property
    def install_command(self) -> str:
        return f'pip install "{self.project}[{self.extra}]"'

    def missing(self) -> tuple[str, ...]:
        return tuple(d for d in self.distributions if not _distribution_installed(d))


def _distribution_installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


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
    input_specs: tuple[Any, ...] = ()  # TensorSpecs, with the declared dynamic dimensions

    def exported(self) -> Any:
        """The program as an ExportedProgram: exported again, with the declared dynamic
        dimensions, when a scheme quantized it in PyTorch (a GraphModule)."""
        import torch

        from edge_export.load.dynamic import is_dynamic, torch_dynamic_shapes, tracing_examples

        if isinstance(self.program, torch.export.ExportedProgram):
            return self.program
        if not is_dynamic(self.input_specs):
            return torch.export.export(self.program, self.example_inputs)
        return torch.export.export(self.program, tracing_examples(self.example_inputs, self.input_specs),
                                   dynamic_shapes=torch_dynamic_shapes(self.input_specs))


@dataclass
class BuildContext:
    """Everything a quantize scheme may need besides the program itself."""

    calibration: list[tuple[Any, ...]]  # tuples of torch tensors, one per sample
    reload_module: Callable[[], Any]  # the eager nn.Module (for source-level quantizers)
    example_inputs: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    # The user's own torchao-quantized module, when the model arrived that way: a scheme of the
    # same kind lowers it as it is (re-quantizing the dequantized copy derives other scales).
    user_module: Callable[[], Any] | None = None


Scheme = Callable[[Any, "Any", BuildContext], Prepared]


class SchemeTable:
    """Quantization schemes of one exporter, registered by decorator."""

    def __init__(self) -> None:
        self._schemes: dict[str, Scheme] = {}
        self._keep_float: set[str] = set()

    def register(self, name: str, keep_float: bool = False) -> Callable[[Scheme], Scheme]:
        """``keep_float=True``: the scheme leaves the recipe's ``keep_float`` module paths
        in float, so ``keep_float = "auto"`` (edge_export.quant.mixed_precision) can drive it."""
        def deco(fn: Scheme) -> Scheme:
            self._schemes[name] = fn
            if keep_float:
                self._keep_float.add(name)
            return fn
        return deco

    def honours_keep_float(self, name: str) -> bool:
        return name in self._keep_float

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
    toolchain: ClassVar[Toolchain | None] = None  # None: the core install is enough
    # Why the target cannot take declared dynamic dimensions (--dynamic); None: it can.
    dynamic_dims_refusal: ClassVar[str | None] = None

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

    def check_runtime(self) -> str | None:
        """For ``edge-export doctor``: load the runtime parity would run on here (no artifact
        needed) and return its name; raise whatever the load raises when it cannot run on this
        host (a missing native library, an unsupported platform). None: no check is declared."""
        return None

    @abc.abstractmethod
    def lower(self, prepared: Prepared, recipe: Any, dest: Path) -> None:
        """Lower to the target format and write the artifact at ``dest``."""

    @abc.abstractmethod
    def load_runtime(self, artifact: Path, threads: int = 1) -> tuple[str, Runner]:
        """(runtime name, runner) for the host; raise RuntimeUnavailable when it cannot run.
        ``threads`` is the runtime's own thread pool (``--threads``): parity does not
        depend on it, latency does, so every runtime must honour it."""

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


ALL_TARGETS = "all"
INSTALL_EVERYTHING = 'pip install "edge-export[all]"'


@cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def target_names() -> list[str]:
    """Registered targets, installed or not, in a stable order (built-ins first, as the
    design lists them)."""
    order = {"android": 0, "ios": 1, "tflite": 2, "coreai": 3}
    return sorted(_entry_points(), key=lambda n: (order.get(n, 99), n))


@dataclass(frozen=True)
class Availability:
    """Whether a registered target can run here, and if not, what is missing and how to get it."""

    target: str
    missing: tuple[str, ...] = ()
    install_command: str | None = None
    # An installed target that ``--target all`` left out because it cannot take this model
    # (a PT2E or torchao model it cannot carry) or has none of a requested recipe: the reason.
    refusal: str | None = None
    recipes: tuple[str, ...] = ()  # the requested recipes it was left out for, if that was why

    @property
    def installed(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str:
        return self.refusal or f"not installed: it needs {', '.join(self.missing)}"

    def describe(self) -> str:
        """The reason plus, when known, the command that installs the target."""
        return f"{self.reason} ({self.install_command})" if self.install_command else self.reason

    def error(self) -> ToolchainMissing:
        return ToolchainMissing(f"target {self.target} is {self.reason}",
                                hint=self.install_command)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "installed": self.installed, "missing": list(self.missing),
                "install": self.install_command, **({"refused": self.refusal} if self.refusal else {}),
                **({"recipes": list(self.recipes)} if self.recipes else {})}


@cache
def availability(target: str) -> Availability:
    """Reads the plugin's ``toolchain`` declaration; plugin modules import their toolchain
    lazily, so loading the class is cheap. A third-party plugin that imports a missing
    module at load time is reported as not installed too, naming that module."""
    try:
        exporter_class = _entry_point(target).load()
    except ImportError as exc:
        return Availability(target, (exc.name or str(exc),))
    declared: Toolchain | None = exporter_class.toolchain
    if declared is None:
        return Availability(target)
    return Availability(target, declared.missing(), declared.install_command)


def _entry_point(target: str) -> importlib.metadata.EntryPoint:
    eps = _entry_points()
    if target not in eps:
        raise UsageError(f"unknown target {target!r}",
                         hint=f"choose from {', '.join(target_names())} or {ALL_TARGETS}")
    return eps[target]


def select_targets(names: Iterable[str]) -> tuple[list[str], list[Availability]]:
    """The targets to build for ``--target`` values, and those ``all`` skipped.

    A target named explicitly must be installed (else ToolchainMissing); ``all`` means
    every *installed* target, and reports the others so the caller can say so."""
    chosen: list[str] = []
    skipped: list[Availability] = []
    for name in names:
        expand = name == ALL_TARGETS
        for target in target_names() if expand else [name]:
            status = availability(target)
            if not status.installed:
                if not expand:
                    raise status.error()
                if status not in skipped:
                    skipped.append(status)
            elif target not in chosen:
                chosen.append(target)
    if not chosen and skipped:
        raise ToolchainMissing(f"--target {ALL_TARGETS}: no target is installed "
                               f"({', '.join(s.target for s in skipped)})", hint=INSTALL_EVERYTHING)
    if not chosen:
        raise UsageError("no --target given", hint="e.g. --target android or --target all")
    return chosen, skipped


def exporter_class(target: str) -> type[Exporter]:
    """The plugin class, for its declarations (loading it imports no toolchain)."""
    return _entry_point(target).load()


def get_exporter(target: str) -> Exporter:
    """The target's exporter; ToolchainMissing when its toolchain is not installed."""
    status = availability(target)
    if not status.installed:
        raise status.error()
    return _entry_point(target).load()()
