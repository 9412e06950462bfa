"""Load stage: turn a ``--model`` spec into a module, example inputs and metadata.

Specs: ``path/to/file.py:attr``, ``package.module:attr`` (the user's own code, run
like ``python -m``), a ``.pt2`` written by ``torch.export.save``, or a pickled
``.pt`` module, which is refused unless the user trusts it (unpickling runs code).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_export.build.capture import toolchain_output
from edge_export.errors import UnsafeInputError, UsageError, summarize_exception
from edge_export.load.adapt import (
    FlatCall,
    contiguous,
    has_strided_weights,
    needs_adapter,
    output_names,
    split_examples,
)
from edge_export.load.compression import Compression, prepare_compressed
from edge_export.load.tasks import check_task, get_task, task_preprocessing
from edge_export.load.tensors import DynamicDim, TensorSpec, with_dynamic_dims

METADATA_ATTR = "edge_export_metadata"
EXAMPLE_INPUTS_ATTR = "example_inputs"


@dataclass
class LoadedModel:
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    inputs: list[TensorSpec]
    output_names: list[str]
    name: str
    labels: list[str] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    compression: Compression = field(default_factory=lambda: Compression())
    declared_kinds: dict[str, str] = field(default_factory=dict)  # metadata "output_kinds"
    example_outputs: list[np.ndarray] = field(default_factory=list)  # flat, on example_inputs
    # The user's own module when ``module`` computes differently (torchao weights dequantized
    # for the targets' schemes): parity compares every artifact with what the user handed over.
    user_module: torch.nn.Module | None = None
    task: str | None = None  # --task, else metadata "task" (edge_export.load.tasks)

    @property
    def reference(self) -> torch.nn.Module:
        return self.user_module if self.user_module is not None else self.module


def load_model(spec: str, *, input_specs: list[TensorSpec] = (), trust_pickle: bool = False,
               name: str | None = None, dynamic: dict[str, list[DynamicDim]] | None = None,
               task: str | None = None) -> LoadedModel:
    """``dynamic``: the ``--dynamic`` declarations, which replace the metadata's ``dynamic_dims``;
    ``task``: ``--task``, which replaces the metadata's ``task`` and is refused if the outputs do not fit."""
    module, examples, default_name = _load_module(spec, trust_pickle)
    module, compression, reference = prepare_compressed(module)
    metadata = dict(getattr(module, METADATA_ATTR, {}) or {})
    if input_specs:
        examples = tuple(_tensor_for(s) for s in input_specs)
    if examples is None:
        examples = getattr(module, EXAMPLE_INPUTS_ATTR, None)
    if examples is None:
        raise UsageError(
            f"{spec} provides no example inputs",
            hint="return (module, example_inputs) from the builder, set module.example_inputs, "
            "or pass --input NAME=1x3x224x224:float32",
        )
    examples, keywords = split_examples(examples)
    examples = contiguous(_as_tensor_tuple(examples, spec))
    if compression.source_dtype == "float16":  # the module was upcast; so are its inputs
        examples = tuple(t.float() if t.dtype == torch.float16 else t for t in examples)
    if has_strided_weights(module):
        module = module.to(memory_format=torch.contiguous_format)
        compression.layout = "channels_last"
    raw = _run_eagerly(reference if reference is not None else module, examples, keywords, spec)
    if needs_adapter(raw, keywords):
        module = FlatCall(module, keywords)
        reference = FlatCall(reference, keywords) if reference is not None else None
    names = output_names(raw)  # refuses non-tensor outputs, before anything reads them
    outputs = flat_numpy(raw)
    check_finite(outputs, spec)
    input_names = list(keywords) or _input_names(module, len(examples), metadata, input_specs)
    specs = [TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch."))
             for n, t in zip(input_names, examples, strict=True)]
    final_names = list(metadata.get("output_names") or names)
    preprocessing = dict(metadata.get("preprocessing") or {})
    task = task or metadata.get("task")
    if task:
        chosen = get_task(task)
        check_task(chosen, specs, list(zip(final_names, outputs, strict=False)))
        preprocessing = task_preprocessing(chosen, specs, preprocessing)
    return LoadedModel(
        module=module,
        example_inputs=examples,
        inputs=with_dynamic_dims(specs, dynamic if dynamic else _declared_dynamic(metadata)),
        output_names=final_names,
        name=name or metadata.get("name") or default_name,
        labels=metadata.get("labels"),
        preprocessing=preprocessing,
        compression=compression,
        declared_kinds=dict(metadata.get("output_kinds") or {}),
        example_outputs=outputs,
        user_module=reference,
        task=task or None,
    )


def _declared_dynamic(metadata: dict) -> dict[str, list[DynamicDim]]:
    """``edge_export_metadata["dynamic_dims"] = {"input_ids": {1: (1, 512)}}``."""
    declared = metadata.get("dynamic_dims") or {}
    try:
        return {str(name): [DynamicDim(int(dim), int(low), int(high)) for dim, (low, high) in dims.items()]
                for name, dims in declared.items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise UsageError(f"edge_export_metadata['dynamic_dims'] is malformed: {exc}",
                         hint='write {"input_ids": {1: (1, 512)}}: input name -> {dim: (min, max)}') from exc


def eager_outputs(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        return flat_numpy(module(*inputs))


def flat_numpy(out: Any) -> list[np.ndarray]:
    from torch.utils._pytree import tree_leaves

    return [t.detach().cpu().float().numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()
            for t in tree_leaves(out)]


def _run_eagerly(module: torch.nn.Module, examples: tuple[torch.Tensor, ...], keywords: tuple[str, ...],
                 spec: str) -> Any:
    """Run once before any export: a shape error is the user's to fix, and is reported as the
    model's (not the tool's) only when the model itself raised."""
    try:
        with torch.no_grad():
            return module(**dict(zip(keywords, examples, strict=True))) if keywords else module(*examples)
    except Exception as exc:  # noqa: BLE001 - the model's own error, summarised for the user
        shapes = ", ".join("x".join(map(str, t.shape)) for t in examples)
        raise UsageError(f"the model rejects example inputs of shape {shapes}: "
                         f"{summarize_exception(exc)}",
                         hint="check --input shapes against the model") from exc


def check_finite(outputs: list[np.ndarray], spec: str) -> None:
    """NaN/Inf on the example inputs is the model's or its weights' fault, not ours."""
    for i, out in enumerate(outputs):
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise UsageError(f"{spec} produces NaN/Inf in output {i} on the example inputs",
                             hint="fix the model or its weights before exporting")


def _load_module(spec: str, trust_pickle: bool) -> tuple[torch.nn.Module, Any, str]:
    path = Path(spec)
    if spec.endswith(".pt2"):
        return _load_pt2(path)
    if spec.endswith((".pt", ".pth")):
        return _load_pickle(path, trust_pickle)
    if ":" not in spec:
        raise UsageError(f"cannot read model spec {spec!r}",
                         hint="use path/to/file.py:attr, package.module:attr, or a .pt2 file")
    where, attr = spec.rsplit(":", 1)
    module_obj = _import_file(where) if where.endswith(".py") else _import_module(where)
    # file and attribute: two models of one file must not publish to one package name
    default_name = f"{Path(where).stem if where.endswith('.py') else where.rsplit('.', 1)[-1]}-{attr}"
    if not hasattr(module_obj, attr):
        raise UsageError(f"{where} has no attribute {attr!r}")
    target = getattr(module_obj, attr)
    examples = None
    if not isinstance(target, torch.nn.Module):
        if not callable(target):
            raise UsageError(f"{spec} is a {type(target).__name__}, not an nn.Module or a builder")
        try:
            target = target()
        except Exception as exc:  # noqa: BLE001 - the user's builder failed
            raise UsageError(f"{spec} raised while building the model: "
                             f"{summarize_exception(exc)}{_user_line(exc, where)}") from exc
        if isinstance(target, tuple) and len(target) == 2:
            target, examples = target
    if not isinstance(target, torch.nn.Module):
        raise UsageError(f"{spec} gave a {type(target).__name__}, not an nn.Module")
    return target, examples, default_name


def _import_file(where: str):
    path = Path(where)
    if not path.is_file():
        raise UsageError(f"model file {where} does not exist")
    mod_name = f"edge_export_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import
        del sys.modules[mod_name]
        raise UsageError(f"importing {where} failed: {summarize_exception(exc)}"
                         f"{_user_line(exc, where)}") from exc
    return module


def _import_module(where: str):
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise UsageError(f"no module named {where!r}",
                             hint="check the spelling, or install/put it on PYTHONPATH") from exc
        raise UsageError(f"importing {where} failed: {summarize_exception(exc)}"
                         f"{_user_line(exc, None)}") from exc
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"importing {where} failed: {summarize_exception(exc)}"
                         f"{_user_line(exc, None)}") from exc


def _user_line(exc: BaseException, where: str | None) -> str:
    """' (file.py line N: source)' for the innermost frame in the user's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "edge_export" not in f.filename and "importlib" not in f.filename]
    if where:
        frames = [f for f in frames if Path(f.filename).resolve() == Path(where).resolve()] or frames
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f" ({exc.filename} line {exc.lineno})"
    if not frames:
        return ""
    f = frames[-1]
    return f" ({Path(f.filename).name} line {f.lineno}: {(f.line or '').strip()})"


def _load_pt2(path: Path) -> tuple[torch.nn.Module, Any, str]:
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    try:
        with toolchain_output(Path(os.devnull)):  # torch logs a traceback; we summarise it
            ep = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - corrupt or truncated archive
        raise UsageError(f"{path} is not a readable torch.export .pt2 file: "
                         f"{summarize_exception(exc)}",
                         hint="write it with torch.export.save(exported_program, path)") from exc
    args, _kwargs = ep.example_inputs or ((), {})
    return ep.module(), (tuple(args) if args else None), path.stem


def _load_pickle(path: Path, trust_pickle: bool) -> tuple[torch.nn.Module, Any, str]:
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    if _is_torchscript(path):
        raise UsageError(f"{path} is a TorchScript archive, which edge-export does not read",
                         hint="export the original nn.Module with torch.export.save to a .pt2, "
                         "or point --model at the Python code that builds it")
    if not trust_pickle:
        raise UnsafeInputError(
            f"refusing to unpickle {path}: loading a pickled module can run arbitrary code",
            hint="pass --trust-pickle if you trust this file, or better, use a .pt2 file")
    try:
        obj = torch.load(str(path), weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"cannot unpickle {path}: {summarize_exception(exc)}") from exc
    if not isinstance(obj, torch.nn.Module):
        raise UsageError(f"{path} holds a {type(obj).__name__}, not a pickled nn.Module",
                         hint="a state_dict needs the code that builds the model: use file.py:attr")
    return obj, None, path.stem


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in zf.namelist())


def _as_tensor_tuple(examples: Any, spec: str) -> tuple[torch.Tensor, ...]:
    if isinstance(examples, torch.Tensor):
        examples = (examples,)
    if not isinstance(examples, (tuple, list)) or not all(
            isinstance(t, torch.Tensor) for t in examples):
        raise UsageError(f"example inputs of {spec} must be a tensor or a tuple of tensors")
    return tuple(examples)


def _input_names(module: torch.nn.Module, count: int, metadata: dict,
                 input_specs: list[TensorSpec]) -> list[str]:
    if input_specs:
        return [s.name for s in input_specs]
    if metadata.get("input_names"):
        return list(metadata["input_names"])
    try:
        params = [p.name for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if len(params) >= count and not any(p in ("args", "kwargs") for p in params[:count]):
        return params[:count]
    return [f"input_{i}" for i in range(count)]


def _tensor_for(spec: TensorSpec) -> torch.Tensor:
    dtype = getattr(torch, spec.dtype)
    gen = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(spec.shape, generator=gen).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, spec.shape, generator=gen).bool()
    return torch.randint(0, 10, spec.shape, generator=gen).to(dtype)
