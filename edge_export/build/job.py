"""One (target, recipe) job: quantize → lower → verify → package.

A job is a pure function of serialisable inputs (the workspace files written by the
export stage plus this dataclass), so it runs the same in-process, in a worker
process or on a Ray cluster, and returns a JobResult instead of raising.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_export import __version__
from edge_export.build.capture import toolchain_output
from edge_export.build.exporter import BuildContext, get_exporter
from edge_export.errors import EdgeExportError, ToolchainError, output_error, summarize_exception
from edge_export.load.tensors import TensorSpec
from edge_export.package.manifest import SCHEMA_VERSION, write_golden, write_manifest
from edge_export.quant.recipe import Recipe
from edge_export.verify.artifact import (
    check_split,
    columns,
    load_npz,
    parity_columns,
    selection_split,
    torch_outputs,
    verify_artifact,
)


@dataclass(frozen=True)
class ModelInfo:
    spec: str
    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    labels: tuple[str, ...] | None
    preprocessing: dict[str, Any]
    weights_sha256: str
    trust_pickle: bool = False
    input_overrides: tuple[TensorSpec, ...] = ()
    graph_sha256: str = ""  # the exported graph: same weights, other code is another model
    output_kinds: tuple[str, ...] = ()  # class-logits | class-probabilities | tensor, per output
    compression: dict[str, Any] = field(default_factory=dict)  # what the user already did
    task: str | None = None  # --task or the metadata's (edge_export.load.tasks); in the cache key


@dataclass(frozen=True)
class Job:
    target: str
    recipe: Recipe
    model: ModelInfo
    workspace: Path  # program.pt2, weights.pt, parity.npz, calibration.npz, eval.npz
    staging: Path  # this job builds its package here
    parity_inputs_from: str  # "validation-data" | "random"
    max_accuracy_drop: float | None = None
    debug: bool = False
    cache_dir: Path | None = None  # content cache (edge_export.build.cache); None bypasses it
    cache_key: str | None = None
    threads: int = 1  # --threads: every runtime's pool while measuring latency

    @property
    def key(self) -> tuple[str, str]:
        return (self.target, self.recipe.name)


@dataclass
class JobResult:
    target: str
    recipe: str
    status: str  # passed | failed | not-run | error
    staged: Path | None = None
    manifest: dict[str, Any] | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    error_code: int = 0
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    # Host latency is measured per run and reported (--json, report), but kept out of
    # the package: packages must be byte-identical for identical inputs.
    latency: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        """The artifact was run on its runtime and compared with PyTorch (passed or failed);
        False for not-run (the host could not run it) and for a job that built nothing."""
        return self.parity.get("status") in ("passed", "failed")


Report = Callable[[tuple[str, str], str], None]


def run_job(job: Job, report: Report | None = None) -> JobResult:
    report = report or (lambda key, stage: None)
    timings: dict[str, float] = {}
    result = JobResult(job.target, job.recipe.name, "error", timings=timings)
    stage_name = "quantize"
    try:
        exporter = get_exporter(job.target)
        staging = job.staging
        staging.mkdir(parents=True)
        artifact = staging / exporter.artifact_name

        def stage(name: str) -> None:
            nonlocal stage_name
            stage_name = name
            report(job.key, name)
            timings[name] = time.monotonic()

        log = staging.parent / f"{staging.name}.log"
        with toolchain_output(log, enabled=not job.debug):
            parity, latency, accuracy = _build_cached(job, exporter, artifact, stage)
        stage("package")
        manifest = _package(job, exporter, staging, parity, accuracy)
        _close_timings(timings)
        result.status = parity["status"]
        if accuracy and accuracy["status"] == "failed":
            result.status = "failed"
        result.staged, result.manifest, result.parity = staging, manifest, parity
        result.latency = latency
        return result
    except EdgeExportError as exc:
        result.error_code, result.error = exc.exit_code, exc.one_line()
    except Exception as exc:  # noqa: BLE001 - any toolchain failure becomes exit 3
        error = output_error(exc) or ToolchainError(f"{stage_name} failed: {summarize_exception(exc)}",
                                                    hint="run with --debug for the full traceback")
        result.error_code, result.error = error.exit_code, error.one_line()
        if job.debug:
            result.error += "\n" + traceback.format_exc()
    _close_timings(timings)
    return result


def _build_cached(job: Job, exporter: Any, artifact: Path, stage: Callable[[str], None]):
    """quantize → lower → verify, or the artifact and results of an identical earlier build."""
    from edge_export.build.cache import Cache, restore

    cache = Cache(job.cache_dir) if job.cache_dir and job.cache_key else None
    hit = cache.lookup(job.cache_key) if cache else None
    if hit is not None:
        stage("cached")
        restore(hit, artifact)
        return hit.results["parity"], hit.results["latency"], hit.results["accuracy"]
    parity, latency, accuracy = _build(job, exporter, artifact, stage)
    if cache:
        cache.store(job.cache_key, artifact,
                    {"parity": parity, "latency": latency, "accuracy": accuracy})
    return parity, latency, accuracy


def _build(job: Job, exporter: Any, artifact: Path, stage: Callable[[str], None]):
    stage("quantize")
    import torch

    from edge_export.quant import mixed_precision
    program = torch.export.load(str(job.workspace / "program.pt2"))
    ctx = _context(job)
    if mixed_precision.is_auto(job.recipe):
        return _build_auto(job, exporter, program, ctx, artifact, stage)
    prepared = _prepare(exporter, program, job.recipe, ctx, job.model.inputs)
    stage("lower")
    exporter.lower(prepared, job.recipe, artifact)
    stage("verify")
    parity, latency, accuracy = verify_artifact(job, exporter, artifact, prepared)
    if parity["status"] == "failed" and job.recipe.param("bits") in (4, 8):
        stage("localize")  # only failed gates pay for the per-layer measurement
        mixed_precision.localize(program, job.recipe, ctx, *parity_columns(job), parity)
    return parity, latency, accuracy


def _prepare(exporter: Any, program: Any, recipe: Recipe, ctx: BuildContext,
             specs: tuple[TensorSpec, ...]) -> Any:
    prepared = exporter.quantize(program, recipe, ctx)
    prepared.example_inputs = ctx.example_inputs
    prepared.input_names = tuple(ctx.input_names)
    prepared.output_names = tuple(ctx.output_names)
    prepared.input_specs = specs
    return prepared


def _build_auto(job: Job, exporter: Any, program: Any, ctx: BuildContext, artifact: Path,
                stage: Callable[[str], None]):
    """keep_float = "auto": see edge_export.quant.mixed_precision (the loop is target-agnostic).
    Candidates are chosen on the selection split, each lowered to its own file; the chosen
    file becomes the artifact and is then verified on the parity samples, as any build is."""
    from edge_export.errors import UsageError
    from edge_export.faultpoints import CORRUPT_AUTO_CANDIDATE, corrupt, fault_at
    from edge_export.quant.mixed_precision import build_auto, report_choice
    from edge_export.verify.parity import gate

    if not exporter.schemes.honours_keep_float(job.recipe.scheme):
        raise UsageError(f"recipe {job.recipe.name} ({job.target}): keep_float = \"auto\" needs a "
                         f"scheme that honours keep_float; {job.recipe.scheme} does not")
    selection = selection_split(job)
    kinds = {"kinds": list(job.model.output_kinds) or None, "real_inputs": selection.real}
    folder = job.staging.parent / f"{job.staging.name}.candidates"

    def reference_parity(prepared: Any) -> dict[str, Any]:
        actual = [torch_outputs(prepared.reference, s) for s in selection.inputs]
        return gate(list(job.model.output_names), selection.reference, actual, job.recipe.parity,
                    "pytorch", "pytorch-float", **kinds).to_json()

    def lower_and_check(prepared: Any, recipe: Recipe) -> tuple[dict[str, Any], tuple[Path, Any]]:
        stage("lower")
        index = len(list(folder.iterdir())) + 1 if folder.exists() else 1
        path = folder / str(index) / exporter.artifact_name
        path.parent.mkdir(parents=True)
        exporter.lower(prepared, recipe, path)
        if fault_at(CORRUPT_AUTO_CANDIDATE, index):
            corrupt(path)
        stage("verify")
        parity, _run = check_split(job, exporter, path, prepared, selection, load_errors=True)
        return parity, (path, prepared)

    stage("sensitivity")
    # The PT2E reference models the artifact only for static activations (dynamic kernels
    static = job.recipe.param("activations") == "static"  # pick qparams per row at run time)
    try:
        choice = build_auto(program, job.recipe, ctx, selection,
                            lambda recipe: _prepare(exporter, program, recipe, ctx, job.model.inputs),
                            reference_parity if static else None, lower_and_check)
        chosen, prepared = choice.candidate
        shutil.move(chosen, artifact)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    stage("verify")
    parity, latency, accuracy = verify_artifact(job, exporter, artifact, prepared)
    report_choice(choice, job.recipe, parity)
    return parity, latency, accuracy


def _close_timings(timings: dict[str, float]) -> None:
    stamps = sorted(timings.items(), key=lambda kv: kv[1])
    now = time.monotonic()
    for (name, start), nxt in zip(stamps, [*(s for _, s in stamps[1:]), now], strict=True):
        timings[name] = round(nxt - start, 3)


def _context(job: Job) -> BuildContext:
    import torch

    n_in = len(job.model.inputs)
    calib = columns(load_npz(job.workspace / "calibration.npz"), "in_", n_in)
    limit = job.recipe.calibration_samples
    parity = load_npz(job.workspace / "parity.npz")
    examples = tuple(torch.from_numpy(parity[f"in_{i}"][0].copy()) for i in range(n_in))

    def load() -> Any:
        from edge_export.load.model import load_model

        return load_model(job.model.spec, input_specs=list(job.model.input_overrides),
                          trust_pickle=job.model.trust_pickle)

    def reload_module() -> torch.nn.Module:
        loaded = load()
        state = torch.load(str(job.workspace / "weights.pt"), weights_only=True, mmap=True)
        loaded.module.load_state_dict(state)
        return loaded.module.eval()

    from edge_export.load.compression import TORCHAO_PREFIX

    torchao = (job.model.compression.get("quantization") or "").startswith(TORCHAO_PREFIX)

    return BuildContext(
        calibration=[tuple(torch.from_numpy(a.copy()) for a in s) for s in calib[:limit]],
        reload_module=reload_module,
        example_inputs=examples,
        input_names=[s.name for s in job.model.inputs],
        output_names=list(job.model.output_names),
        user_module=(lambda: load().reference.eval()) if torchao else None,
    )


def _package(job: Job, exporter: Any, staging: Path, parity: dict[str, Any],
             accuracy: dict[str, Any] | None) -> dict[str, Any]:
    model = job.model
    arrays = load_npz(job.workspace / "parity.npz")
    inputs = columns(arrays, "in_", len(model.inputs))
    outputs = [list(s) for s in columns(arrays, "out_", len(model.output_names))]
    app_vectors = None
    if (job.workspace / "app_vectors.json").exists():
        shutil.copytree(job.workspace / "golden" / "app", staging / "golden" / "app")
        app_vectors = json.loads((job.workspace / "app_vectors.json").read_text())
    samples = write_golden(staging, [s.name for s in model.inputs], list(model.output_names),
                           inputs, outputs)
    labels = None
    if model.labels:
        (staging / "labels.txt").write_text("\n".join(model.labels) + "\n")
        labels = {"file": "labels.txt", "count": len(model.labels)}
    parity_file = {"parity": parity, "accuracy": accuracy}
    (staging / "parity.json").write_text(json.dumps(parity_file, indent=2, sort_keys=True) + "\n")
    worst = _worst(parity)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": model.name,
        "version": model.version,
        "target": job.target,
        "verified": parity["status"] != "not-run",  # False: nothing ran this artifact
        "format": exporter.format,
        "recipe": {"name": job.recipe.name, "summary": job.recipe.summary,
                   "scheme": job.recipe.scheme, "params": job.recipe.params,
                   "sha256": job.recipe.sha256,
                   **({"requested": job.recipe.requested} if job.recipe.requested else {})},
        "artifact": {"path": exporter.artifact_name, "sha256": "0" * 64, "bytes": 0},
        "inputs": [{**s.to_json(), "layout": "contiguous"} for s in model.inputs],
        "outputs": [{"name": n, "dtype": str(a.dtype), "shape": list(a.shape), "dynamic_dims": [],
                     "kind": kind}
                    for n, a, kind in zip(model.output_names, outputs[0],
                                          model.output_kinds or ["tensor"] * len(outputs[0]),
                                          strict=True)],
        "preprocessing": model.preprocessing,
        "labels": labels,
        "runtime": exporter.runtime_requirements(job.recipe),
        "tools": {**exporter.tool_versions(), "edge-export": __version__},
        # reference: what the gate compared with (verify.artifact.gate_reference): pytorch-float,
        # or pytorch-user-quantized for a model that arrived quantized
        "parity": {"status": parity["status"], "runtime": parity["runtime"],
                   "reference": parity["reference"],
                   "reason": parity["reason"], "inputs": job.parity_inputs_from,
                   "thresholds": parity["thresholds"], "not_applied": parity.get("not_applied", {}),
                   "worst": worst},
        "accuracy": accuracy,
        "golden": {"byte_order": "little", "inputs_from": job.parity_inputs_from,
                   "samples": samples},
        "source": {"model": model.spec, "weights_sha256": model.weights_sha256,
                   "graph_sha256": model.graph_sha256, "compression": model.compression},
    }
    if model.task:  # optional: a package made without a task reads as before
        manifest["task"] = model.task
    if app_vectors:
        manifest["app_vectors"] = app_vectors
    return write_manifest(staging, manifest)


def _worst(parity: dict[str, Any]) -> dict[str, Any]:
    """The output with the lowest cosine similarity, for a one-glance summary."""
    if not parity.get("outputs"):
        return {}
    name, metrics = min(parity["outputs"].items(), key=lambda kv: kv[1]["cosine"])
    return {"output": name, **metrics}
