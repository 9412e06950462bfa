"""The export session: load → export once → per (target, recipe) job → publish.

Jobs run in-process with ``jobs=1`` and in spawned worker processes otherwise
(each imports only its own toolchain); results are published in a stable order,
and only packages whose gates passed reach their final place under ``--out``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_export.errors import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_TOOLCHAIN,
    Interrupted,
    UsageError,
)
from edge_export.exporter import target_names
from edge_export.job import Job, JobResult, ModelInfo, run_job
from edge_export.package import (
    clean_leftovers,
    failed_dir,
    package_dir,
    publish,
    staging_root,
)
from edge_export.progress import Progress
from edge_export.recipe import Recipe, builtin_recipes, is_recipe_file, load_recipe_file
from edge_export.tensors import TensorSpec

DEFAULT_VERSION = "0.1.0"


@dataclass(frozen=True)
class ExportOptions:
    model: str
    targets: tuple[str, ...]
    recipes: tuple[str, ...] = ("fp32",)
    out: Path = Path("dist")
    name: str | None = None
    version: str = DEFAULT_VERSION
    inputs: tuple[TensorSpec, ...] = ()
    trust_pickle: bool = False
    validation_data: Path | None = None
    parity_samples: int = 8
    calibration_data: Path | None = None
    calibration_samples: int | None = None
    eval_data: Path | None = None
    max_accuracy_drop: float | None = None
    jobs: int = 1
    debug: bool = False
    quiet: bool = False


@dataclass
class RunReport:
    results: list[JobResult] = field(default_factory=list)
    published: dict[tuple[str, str], Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        codes = [r.error_code for r in self.results if r.status == "error"]
        if codes:
            return EXIT_TOOLCHAIN if EXIT_TOOLCHAIN in codes else codes[0]
        if any(r.status == "failed" for r in self.results):
            return EXIT_GATE_FAILED
        return EXIT_OK


def resolve_targets(names: tuple[str, ...]) -> list[str]:
    chosen: list[str] = []
    for name in names:
        for target in (target_names() if name == "all" else [name]):
            if target not in target_names():
                raise UsageError(f"unknown target {target!r}",
                                 hint=f"choose from {', '.join(target_names())} or all")
            if target not in chosen:
                chosen.append(target)
    if not chosen:
        raise UsageError("no --target given", hint="e.g. --target android or --target all")
    return chosen


def resolve_recipes(targets: list[str], requested: tuple[str, ...]) -> list[tuple[str, Recipe]]:
    """The (target, recipe) matrix; an unsupported named recipe is a usage error."""
    files = [load_recipe_file(r) for r in requested if is_recipe_file(r)]
    names = [r for r in requested if not is_recipe_file(r)]
    plan: list[tuple[str, Recipe]] = []
    for target in targets:
        shipped = builtin_recipes(target)
        for name in names:
            recipe = shipped.get(name)
            supported = sorted(n for n, r in shipped.items() if r.supported)
            if recipe is None:
                raise UsageError(f"unknown recipe {name!r} for target {target}",
                                 hint=f"{target} supports: {', '.join(supported)}")
            if not recipe.supported:
                raise UsageError(f"recipe {name!r} is not supported on {target}: "
                                 f"{recipe.unsupported}",
                                 hint=f"{target} supports: {', '.join(supported)}")
            plan.append((target, recipe))
        plan.extend((target, r) for r in files if r.target == target)
    for recipe in files:
        if recipe.target not in targets:
            raise UsageError(f"recipe file {recipe.name!r} is for target {recipe.target}, "
                             f"which is not among --target {', '.join(targets)}")
        if not recipe.supported:
            raise UsageError(f"recipe file {recipe.name!r} says it is unsupported: "
                             f"{recipe.unsupported}")
    return plan


def run_export(opts: ExportOptions) -> RunReport:
    from edge_export import workspace

    targets = resolve_targets(opts.targets)
    plan = resolve_recipes(targets, opts.recipes)
    for _, recipe in plan:
        needs = recipe.calibration_required and opts.calibration_data is None
        if needs:
            raise UsageError(f"recipe {recipe.name!r} ({recipe.target}) needs calibration data",
                             hint="pass --calibration-data FILE.npz|FILE.pt|IMAGE_DIR")
    _check_out(opts.out)
    clean_leftovers(opts.out)
    root = staging_root(opts.out)
    report = RunReport()
    progress = Progress([(t, r.name) for t, r in plan], quiet=opts.quiet)
    try:
        progress.note(f"[bold]load[/] {opts.model}")
        prepared = workspace.prepare(opts, root / "workspace", plan)
        jobs = [Job(target=t, recipe=r, model=prepared.model, workspace=root / "workspace",
                    staging=root / f"{t}-{r.name}", parity_inputs_from=prepared.parity_from,
                    max_accuracy_drop=opts.max_accuracy_drop, debug=opts.debug)
                for t, r in plan]
        with progress:
            report.results = _run_jobs(jobs, opts.jobs, progress)
        _publish(report, jobs, opts.out, prepared.model)
    except KeyboardInterrupt as exc:
        raise Interrupted("interrupted: workers stopped, temporaries removed") from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable")


def _run_jobs(jobs: list[Job], workers: int, progress: Progress) -> list[JobResult]:
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(run_job(job, progress.stage))
            _finished(progress, results[-1])
        return results
    return _run_parallel(jobs, workers, progress)


def _run_parallel(jobs: list[Job], workers: int, progress: Progress) -> list[JobResult]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        events = manager.Queue()
        pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx)
        try:
            futures = [pool.submit(_worker, job, events) for job in jobs]
            pending = set(futures)
            while pending:
                _drain(events, progress)
                for fut in [f for f in pending if f.done()]:
                    pending.discard(fut)
                    _finished(progress, fut.result())
                if pending:
                    _wait_event(events, progress)
            _drain(events, progress)
            return [f.result() for f in futures]
        except BaseException:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)


def _worker(job: Job, events: Any) -> JobResult:
    return run_job(job, lambda key, stage: events.put((key, stage)))


def _wait_event(events: Any, progress: Progress) -> None:
    import queue

    try:
        key, stage = events.get(timeout=0.2)
    except queue.Empty:
        return
    progress.stage(key, stage)


def _drain(events: Any, progress: Progress) -> None:
    while not events.empty():
        key, stage = events.get()
        progress.stage(key, stage)


def _finished(progress: Progress, result: JobResult) -> None:
    detail = result.error or result.parity.get("reason", "")
    progress.finish((result.target, result.recipe), result.status, detail)


def _publish(report: RunReport, jobs: list[Job], out: Path, model: ModelInfo) -> None:
    for job, result in zip(jobs, report.results, strict=True):
        if result.staged is None:
            continue
        if result.status in ("passed", "not-run"):
            dest = package_dir(out, model.name, model.version, job.target, job.recipe.name)
        else:
            dest = failed_dir(out, model.name, model.version, job.target, job.recipe.name)
        publish(result.staged, dest)
        report.published[job.key] = dest

