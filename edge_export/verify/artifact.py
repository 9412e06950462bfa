"""The verify stage of one job: run the artifact on its own runtime and compare it with
PyTorch (the gate against float, or against the user's module for a model that arrived
quantized: gate_reference; the lowering-fidelity gate against the model a recipe quantized
in PyTorch), at every declared dynamic size, then its host latency and, with
``--eval-data``, its accuracy. Inputs come from the workspace files the export stage wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_export.build.exporter import RuntimeUnavailable
from edge_export.errors import summarize_exception
from edge_export.quant.recipe import Thresholds

if TYPE_CHECKING:
    import numpy as np

    from edge_export.build.job import Job
    from edge_export.verify.parity import ParityResult

# Lowering-fidelity gate (artifact vs the quantized model run in PyTorch) when a
# recipe does not set one: tight, because both sides compute the same quantized graph.
DEFAULT_FIDELITY = Thresholds(cosine=0.999, snr_db=30.0)
# A model that arrived quantized, on a target running the user's own scheme: artifact vs the
# user's module, as tight as lowering fidelity (both sides compute the same quantization).
SAME_SCHEME_GATE = DEFAULT_FIDELITY
FLOAT, USER_QUANTIZED = "pytorch-float", "pytorch-user-quantized"


def gate_reference(job: Job) -> tuple[str, Thresholds]:
    """Which reference the package is gated on, and at which thresholds.

    A float model is gated against float PyTorch at the recipe's ``[parity]``. A model that
    arrives quantized (a PT2E graph, torchao weights: ``source.compression.quantization``)
    is gated on what the user handed over: fidelity to the user's own quantized module (the
    golden outputs), at SAME_SCHEME_GATE where the recipe declares it runs the same scheme
    (``[carries]``: ``"same"``) and at the recipe's ``[parity]`` where it runs the closest
    one (``"closest"``). Quality against float (for torchao, the dequantized float copy; a PT2E
    graph has no float model) is reported beside it, and gated only when asked: the recipe's
    ``[goal]`` (float_quality_gate). ``parity.reference`` and the manifest record which
    reference gated."""
    quantized = job.model.compression.get("quantization")
    if not quantized:
        return FLOAT, job.recipe.parity
    same = job.recipe.carries.get(quantized) == "same"
    return USER_QUANTIZED, SAME_SCHEME_GATE if same else job.recipe.parity


def float_quality_gate(job: Job) -> Thresholds | None:
    """The quality-against-float thresholds a quantized model is gated at: only those the
    user asked for (a recipe's ``[goal]``); None reports the quality without gating it."""
    return job.recipe.goal


@dataclass(frozen=True)
class Split:
    """Samples with their float PyTorch outputs, and where they come from."""

    inputs: list[tuple[np.ndarray, ...]]
    reference: list[list[np.ndarray]]
    source: str  # validation-data | random | calibration-data
    overlaps_calibration: bool = False  # the quantizer calibrated on these very samples
    float_reference: list[list[np.ndarray]] | None = None  # a torchao model's dequantized float copy

    @property
    def real(self) -> bool:
        return self.source != "random"

    def describe(self) -> dict[str, Any]:
        return {"from": self.source, "samples": len(self.inputs),
                "overlaps_calibration": self.overlaps_calibration}


def parity_columns(job: Job) -> tuple[list[tuple[np.ndarray, ...]], list[list[np.ndarray]]]:
    """The parity inputs and float PyTorch outputs (per sample) the gate is computed on."""
    split = parity_split(job)
    return split.inputs, split.reference


def parity_split(job: Job) -> Split:
    """The samples the reported parity is computed on."""
    return _split(job, "parity.npz", job.parity_inputs_from)


def selection_split(job: Job) -> Split:
    """The samples keep_float = "auto" chooses on, disjoint from the parity samples
    (``selection.npz``, written by the export stage: edge_export.build.workspace)."""
    arrays = load_npz(job.workspace / "selection.npz")
    return _split(job, "selection.npz", str(arrays["source"]), bool(arrays["overlaps_calibration"]), arrays)


def _split(job: Job, name: str, source: str, overlaps: bool = False,
           arrays: dict[str, np.ndarray] | None = None) -> Split:
    arrays = arrays if arrays is not None else load_npz(job.workspace / name)
    inputs = columns(arrays, "in_", len(job.model.inputs))
    names = len(job.model.output_names)
    reference = [list(s) for s in columns(arrays, "out_", names)]
    floats = [list(s) for s in columns(arrays, "float_out_", names)] if "float_out_0" in arrays else None
    return Split(inputs, reference, source, overlaps, floats)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def columns(arrays: dict[str, np.ndarray], prefix: str, count: int) -> list[tuple[np.ndarray, ...]]:
    if not arrays:
        return []
    cols = [arrays[f"{prefix}{i}"] for i in range(count)]
    return [tuple(c[s] for c in cols) for s in range(len(cols[0]))]


def verify_artifact(job: Job, exporter: Any, artifact: Path, prepared: Any):
    """The reported parity (the parity samples, every declared dynamic size), host latency and
    accuracy of the artifact."""
    split = parity_split(job)
    parity, run = check_split(job, exporter, artifact, prepared, split)
    if run is None:
        return parity, None, None
    sizes = _check_sizes(job, run, parity)
    latency = _latency(run, split.inputs[0], job.threads)
    accuracy = _accuracy(job, run, parity["runtime"])
    return {**parity, **sizes}, latency, accuracy


def check_split(job: Job, exporter: Any, artifact: Path, prepared: Any, split: Split,
                load_errors: bool = False) -> tuple[dict[str, Any], Any]:
    """(parity.json record, the runtime's run function or None when the artifact did not run):
    the artifact run on ``split`` and gated against the gate's reference (gate_reference) and,
    where the recipe quantized in PyTorch, against that quantized model (lowering fidelity).
    The record names the artifact it measured by the manifest's hash, so a package can be
    checked to ship the file its figures are of. ``load_errors``: an artifact the runtime
    cannot load fails the check instead of raising (a keep_float candidate)."""
    from edge_export.package.hashing import artifact_sha256
    from edge_export.verify.latency import limit_threads
    from edge_export.verify.parity import ParityResult, gate, gate_terms

    sha256, size = artifact_sha256(artifact)
    measured = {"samples": len(split.inputs), "artifact": {"sha256": sha256, "bytes": size}}
    kinds = {"kinds": list(job.model.output_kinds) or None, "real_inputs": split.real}
    reference_name, thresholds = gate_reference(job)
    terms = {"reference": reference_name, **gate_terms(thresholds, samples=len(split.inputs), **kinds)}
    try:
        limit_threads(job.threads)
        runtime, run = exporter.load_runtime(artifact, threads=job.threads)
    except RuntimeUnavailable as exc:
        result = ParityResult("not-run", exporter.runtime_name, reason=str(exc), **terms)
        return {**_parity_json(result, None, split), **measured}, None
    except Exception as exc:
        if not load_errors:
            raise
        result = ParityResult("failed", exporter.runtime_name, **terms,
                              reason=f"{exporter.runtime_name} could not load the artifact: "
                                     f"{summarize_exception(exc)}")
        return {**_parity_json(result, None, split), **measured}, None
    try:
        actual = [run(list(sample)) for sample in split.inputs]
    except Exception as exc:  # noqa: BLE001 - the runtime rejected the artifact
        result = ParityResult("failed", runtime, **terms,
                              reason=f"{runtime} could not run the artifact: "
                                     f"{summarize_exception(exc)}")
        return {**_parity_json(result, None, split), **measured}, None
    names = list(job.model.output_names)
    quality = gate(names, split.reference, actual, thresholds, runtime, reference_name, **kinds)
    against_float = _against_float(job, split, names, actual, runtime, kinds, quality)
    fidelity = None
    if prepared.reference is not None:
        ref_q = [torch_outputs(prepared.reference, s) for s in split.inputs]
        fidelity = gate(names, ref_q, actual, job.recipe.fidelity or DEFAULT_FIDELITY,
                        runtime, "pytorch-quantized", **kinds)
        if fidelity.status == "failed" and quality.status == "passed":
            quality.status, quality.reason = "failed", fidelity.reason
    return {**_parity_json(quality, fidelity, split), **against_float, **measured}, run


def _against_float(job: Job, split: Split, names: list[str], actual: list[list[np.ndarray]], runtime: str,
                   kinds: dict[str, Any], quality: ParityResult) -> dict[str, Any]:
    """A torchao model's quality against its dequantized float copy (``float_out_`` of the
    split): under ``"float"`` in parity.json, ``"gated": false`` unless float_quality_gate asks
    for it."""
    from edge_export.verify.parity import gate

    if split.float_reference is None:
        return {}
    asked = float_quality_gate(job)
    result = gate(names, split.float_reference, actual, asked or job.recipe.parity, runtime, FLOAT, **kinds)
    if asked is None:
        result.status, result.reason = "reported", ""
    elif result.status == "failed" and quality.status == "passed":
        quality.status, quality.reason = "failed", result.reason
    return {"float": {**result.to_json(), "gated": asked is not None}}


def _check_sizes(job: Job, run: Any, parity: dict[str, Any]) -> dict[str, Any]:
    """Parity at the other sizes of the declared dynamic dimensions (``sizes.npz``), against
    the gate's reference and thresholds (gate_reference); the first failure fails the package."""
    from edge_export.load.dynamic import sizes_label
    from edge_export.verify.parity import ParityResult, gate

    arrays = load_npz(job.workspace / "sizes.npz")
    if not arrays:
        return {}
    runtime = parity["runtime"]
    names, specs = list(job.model.output_names), job.model.inputs
    reference_name, thresholds = gate_reference(job)
    checked = []
    for k in range(len({key.split("_", 1)[0] for key in arrays})):
        sample = tuple(arrays[f"s{k}_in_{i}"] for i in range(len(specs)))
        reference = [arrays[f"s{k}_out_{j}"] for j in range(len(names))]
        label = sizes_label(sample, specs)
        try:
            result = gate(names, [reference], [run(list(sample))], thresholds, runtime, reference_name,
                          kinds=list(job.model.output_kinds) or None, real_inputs=False)
        except Exception as exc:  # noqa: BLE001 - the runtime rejected this size
            result = ParityResult("failed", runtime, reason=f"{runtime} could not run it: "
                                  f"{summarize_exception(exc)}")
        checked.append({"inputs": label, "status": result.status, "reason": result.reason,
                        "outputs": {n: {k: m[k] for k in ("cosine", "snr_db", "max_abs") if k in m}
                                    for n, m in result.outputs.items()}})
        if result.status == "failed" and parity["status"] == "passed":
            parity["status"], parity["reason"] = "failed", f"at {label}: {result.reason}"
    return {"dynamic_sizes": checked}


def torch_outputs(module: Any, sample: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    import torch

    from edge_export.load.model import eager_outputs

    return eager_outputs(module, tuple(torch.from_numpy(a.copy()) for a in sample))


def _parity_json(quality: Any, fidelity: Any, split: Split) -> dict[str, Any]:
    data = quality.to_json()
    data["inputs"] = split.source
    data["fidelity"] = fidelity.to_json() if fidelity else None
    return data


def _latency(run: Any, sample: tuple[np.ndarray, ...], threads: int) -> dict[str, Any]:
    """min/median/p90 after warm-up, with the load average (edge_export.verify.latency)."""
    from edge_export.verify.latency import single

    return single(lambda: run(list(sample)), threads=threads)


def _accuracy(job: Job, run: Any, runtime: str) -> dict[str, Any] | None:
    import numpy as np

    arrays = load_npz(job.workspace / "eval.npz")
    if not arrays:
        return None
    samples = columns(arrays, "in_", len(job.model.inputs))
    labels = arrays["labels"]
    hits = [int(np.argmax(run(list(s))[0])) == int(label) for s, label in zip(samples, labels,
                                                                              strict=True)]
    float_acc = float(arrays["float_accuracy"])
    artifact_acc = 100.0 * float(np.mean(hits))
    drop = round(float_acc - artifact_acc, 4)
    limit = job.max_accuracy_drop if job.max_accuracy_drop is not None else (
        job.recipe.max_accuracy_drop if job.recipe.max_accuracy_drop is not None else 1.0)
    return {"status": "passed" if drop <= limit else "failed", "runtime": runtime,
            "samples": len(samples), "float": round(float_acc, 4),
            "artifact": round(artifact_acc, 4), "drop": drop, "max_drop": limit}
