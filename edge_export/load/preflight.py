"""``edge-export inspect``: what a model is and what each target will make of it, before any
export — parameters, dtypes, sparsity, the compression found, the input/output contract, and
per target the ops that will not convert or will not be delegated, and, for a model the user
already quantized, which recipe each target ships it as (or why that target cannot carry it).

Users of the anchors ask for exactly this (AI Hub's compile feedback, ExecuTorch's
delegation summary), and it costs one torch.export plus each target's cheapest check.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path
from typing import Any

from edge_export.build.exporter import availability, get_exporter
from edge_export.errors import summarize_exception
from edge_export.load.tensors import TensorSpec


def inspect_model(spec: str, targets: list[str], input_specs: list[TensorSpec] = (),
                  trust_pickle: bool = False) -> dict[str, Any]:
    import torch

    from edge_export.build.capture import toolchain_output
    from edge_export.build.workspace import export_failure, output_kinds
    from edge_export.load.model import load_model

    loaded = load_model(spec, input_specs=list(input_specs), trust_pickle=trust_pickle)
    params = list(loaded.module.parameters())
    outputs = loaded.example_outputs
    report: dict[str, Any] = {
        "model": spec, "name": loaded.name,
        "parameters": sum(p.numel() for p in params),
        "dtypes": dict(Counter(str(p.dtype).removeprefix("torch.") for p in params).most_common()),
        "compression": loaded.compression.to_json(),
        "inputs": [s.to_json() for s in loaded.inputs],
    }
    try:
        with toolchain_output(Path(os.devnull)):
            program = torch.export.export(loaded.module, loaded.example_inputs)
    except Exception as exc:  # noqa: BLE001 - reported, as export would
        report["outputs"] = [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype)}
                             for n, o in zip(loaded.output_names, outputs, strict=True)]
        report["export"] = export_failure(exc, spec).one_line()
        report["task"] = _task(loaded, ())
        report["targets"] = {}
        return report
    report["export"] = "ok"
    kinds = output_kinds(program, loaded)
    report["outputs"] = [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype), "kind": k}
                         for n, o, k in zip(loaded.output_names, outputs, kinds, strict=True)]
    report["task"] = _task(loaded, kinds)
    report["ops"] = dict(Counter(_op(n.target) for n in program.graph.nodes
                                 if n.op == "call_function").most_common())
    with toolchain_output(Path(os.devnull)):  # converters print progress and graphs
        # Each target gets its own copy, as each export job loads its own program.pt2: lowering
        # passes edit a program in place (ExecuTorch's constant propagation pops the lifted
        # constants from the dict that run_decompositions shares with its input), so the target
        # checked after android would otherwise meet a program missing its buffers (KeyError).
        report["targets"] = {t: _target_preflight(t, copy.deepcopy(program)) for t in targets}
    if loaded.compression.quantized:
        for target, found in report["targets"].items():
            found["ships_as"] = _ships_as(target, report["compression"])
    return report


def _task(loaded: Any, kinds: tuple[str, ...]) -> dict[str, str]:
    """The model's task: the one its metadata declares, else the guess of ``guess_task`` with
    how sure it is and why, for ``export --task``."""
    from edge_export.load.tasks import guess_task

    if loaded.task:
        return {"name": loaded.task, "source": "declared", "confidence": "high",
                "why": "edge_export_metadata['task']"}
    name, confidence, why = guess_task(loaded.inputs, list(zip(loaded.output_names, loaded.example_outputs,
                                                               strict=True)), kinds)
    return {"name": name, "source": "guess", "confidence": confidence, "why": why}


def _ships_as(target: str, compression: dict[str, Any]) -> str:
    """The recipe an export without ``--recipe`` gives this target for an already-quantized
    model, decided by the same rule the pipeline applies (``compose_with_compression``)."""
    from edge_export.build.plan import FLOAT_RECIPE, compose_with_compression
    from edge_export.errors import UsageError
    from edge_export.quant.recipe import builtin_recipes

    try:
        ((_, recipe),), _ = compose_with_compression([(target, builtin_recipes(target)[FLOAT_RECIPE])],
                                                     compression, explicit=frozenset({target}))
    except UsageError as exc:
        return f"cannot carry it: {exc.message}"
    return recipe.name


def _target_preflight(target: str, program: Any) -> dict[str, Any]:
    available = availability(target)
    if not available.installed:
        return {"status": "not installed", "not_converted": [], "not_delegated": [],
                "error": available.describe()}
    exporter = get_exporter(target)
    try:
        found = exporter.preflight(program)
    except Exception as exc:  # noqa: BLE001 - the toolchain's own failure is the finding
        return {"status": "fails", "not_converted": [], "not_delegated": [],
                "error": summarize_exception(exc)}
    status = "fails" if found.get("not_converted") else (
        "partly delegated" if found.get("not_delegated") else "ok")
    return {"status": status, "not_converted": found.get("not_converted", []),
            "not_delegated": found.get("not_delegated", [])}


def _op(target: Any) -> str:
    return getattr(target, "__name__", str(target)).removesuffix(".default").removeprefix("aten.")
