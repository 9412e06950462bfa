"""The export session: load → export once → per (target, recipe) job → publish.

Jobs run in-process with ``jobs=1`` and in spawned worker processes otherwise
(each imports only its own toolchain); results are published in a stable order,
and only packages whose gates passed reach their final place under ``--out``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge_export.build.cache import Cache, hint_of
from edge_export.build.exporter import ALL_TARGETS, Availability
from edge_export.build.job import Job, JobResult, ModelInfo, run_job
from edge_export.build.plan import (
    compose_with_compression,
    override_keep_float,
    plan_targets_and_recipes,
    refuse_dynamic,
)
from edge_export.build.workers import WorkerPool
from edge_export.cli.progress import Progress
from edge_export.errors import (
    Interrupted,
    UsageError,
    outcome_code,
)
from edge_export.faultpoints import AFTER_EXPORT, BEFORE_PUBLISH, pause_point
from edge_export.load.tensors import DynamicDim, TensorSpec
from edge_export.package.archive import write_zip, zip_name
from edge_export.package.manifest import (
    check_replaceable,
    clean_leftovers,
    failed_dir,
    package_dir,
    publish,
    publish_lock,
    staging_root,
)
from edge_export.quant.recipe import Recipe

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
    dynamic: tuple[tuple[str, DynamicDim], ...] = ()  # --dynamic NAME:DIM=MIN..MAX
    trust_pickle: bool = False
    validation_data: Path | None = None
    parity_samples: int = 8
    calibration_data: Path | None = None
    calibration_samples: int | None = None
    eval_data: Path | None = None
    max_accuracy_drop: float | None = None
    jobs: int = 1
    debug: bool = False
    force: bool = False  # replace a published package built from a different model
    quiet: bool = False
    cache_dir: Path | None = None  # content cache (edge_export.build.cache); None bypasses it
    threads: int = 1  # every runtime's thread pool while latency is measured (--threads)
    keep_float: str | None = None  # --keep-float auto: overrides the recipes' keep_float
    allow_unverified: bool = False  # publish packages whose runtime could not run them (exit 0)
    task: str | None = None  # --task (edge_export.load.tasks): output kinds, manifest task, preprocessing


@dataclass
class RunReport:
    results: list[JobResult] = field(default_factory=list)
    published: dict[tuple[str, str], Path] = field(default_factory=dict)
    skipped: list[Availability] = field(default_factory=list)  # targets --target all left out
    allow_unverified: bool = False  # --allow-unverified: a not-run package is published, exit 0

    def publishes(self, result: JobResult) -> bool:
        """A package goes to its final place when its gates passed, or when its runtime could
        not run it and the user allowed that; everything else stays under ``.failed/``."""
        return result.status == "passed" or (result.status == "not-run" and self.allow_unverified)

    @property
    def refused_unverified(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "not-run" and not self.allow_unverified]

    @property
    def exit_code(self) -> int:
        """Precedence in ``errors.outcome_code``: error 3 > other errors > gate failed 1 > unverified 4."""
        return outcome_code([r.error_code for r in self.results if r.status == "error"],
                            any(r.status == "failed" for r in self.results), bool(self.refused_unverified))


def run_export(opts: ExportOptions) -> RunReport:
    from edge_export.build import fastpath
    targets, plan, skipped = plan_targets_and_recipes(opts.targets, opts.recipes,
                                                      calibrated=opts.calibration_data is not None)
    if opts.dynamic:
        refuse_dynamic(targets)
    plan = override_keep_float(plan, opts.keep_float)
    for _, recipe in plan:
        needs = recipe.calibration_required and opts.calibration_data is None
        if needs:
            raise UsageError(f"recipe {recipe.name!r} ({recipe.target}) needs calibration data",
                             hint="pass --calibration-data FILE.npz|FILE.pt|IMAGE_DIR")
    _check_out(opts.out)
    clean_leftovers(opts.out)
    created_out = not opts.out.exists()
    cache = Cache(opts.cache_dir) if opts.cache_dir is not None else None
    if cache is not None:  # an unchanged model: its packages again, without torch
        hit, fast_key, hashes = fastpath.attempt(opts, plan, skipped)
        if hit is not None:
            return hit
    from edge_export.build import workspace  # imports torch

    root = staging_root(opts.out)
    report = RunReport(skipped=skipped, allow_unverified=opts.allow_unverified)
    progress = Progress([(t, r.name) for t, r in plan], quiet=opts.quiet)
    pool = None
    try:
        pool = _start_workers(opts, plan, cache, root)
        progress.note(f"[bold]load[/] {opts.model}")
        with (fastpath.recording() if cache is not None else contextlib.nullcontext(set())) as read:
            prepared = workspace.prepare(opts, root / "workspace", plan)
        explicit = frozenset(t for t in opts.targets if t != ALL_TARGETS)
        plan, refused = compose_with_compression(plan, prepared.model.compression, explicit)
        report.skipped += refused
        from edge_export.load.dynamic import is_dynamic  # numpy: not on the fast path

        if is_dynamic(prepared.model.inputs):  # declared in the model's metadata too
            refuse_dynamic(targets)
        progress.replan([(t, r.name) for t, r in plan])
        for target, recipe in plan:
            check_replaceable(package_dir(opts.out, prepared.model.name, prepared.model.version,
                                          target, recipe.name), prepared.model, opts.force)
        jobs = [Job(target=t, recipe=r, model=prepared.model, workspace=root / "workspace",
                    staging=root / f"{t}-{r.name}", parity_inputs_from=prepared.parity_from,
                    max_accuracy_drop=opts.max_accuracy_drop, debug=opts.debug,
                    cache_dir=opts.cache_dir, threads=opts.threads)
                for t, r in plan]
        jobs = _with_cache_keys(jobs, prepared.inputs_sha256)
        pause_point(AFTER_EXPORT)
        with progress:
            report.results = _run_jobs(jobs, pool, opts.jobs, root, progress, opts.debug)
        _remember(opts, cache, jobs, report.results)
        pause_point(BEFORE_PUBLISH)
        _publish(report, jobs, opts.out, prepared.model, opts.force)
        if cache is not None:
            deps = fastpath.dependencies(read, exclude=[opts.out, opts.cache_dir])
            fastpath.store(opts.cache_dir, fast_key, deps, hashes, prepared.model, jobs, report)
    except KeyboardInterrupt as exc:
        raise Interrupted("interrupted: workers stopped, temporaries removed") from exc
    finally:
        if pool is not None:
            pool.close()
        shutil.rmtree(root, ignore_errors=True)
        if created_out and not any(opts.out.iterdir()):
            opts.out.rmdir()  # a run that published nothing leaves no trace
    return report


def _check_out(out: Path) -> None:
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory" if probe == out
                         else f"--out {out} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable")


def _start_workers(opts: ExportOptions, plan: list[tuple[str, Recipe]], cache: Cache | None,
                   root: Path) -> WorkerPool | None:
    """Before the model is loaded, start a worker (which imports its toolchain at once) for
    each job that the cache will probably not answer, up to --jobs; a lone job runs here."""
    likely = [t for t, r in plan
              if cache is None or not cache.predicts_hit(hint_of(opts.model, t, r.sha256))]
    if opts.jobs <= 1 or len(likely) <= 1:
        return None
    return WorkerPool(likely[:opts.jobs], root, debug=opts.debug)


def _with_cache_keys(jobs: list[Job], inputs_sha256: dict[str, str]) -> list[Job]:
    if not jobs or jobs[0].cache_dir is None:
        return jobs
    from edge_export.build.cache import job_key
    from edge_export.build.exporter import get_exporter

    return [replace(j, cache_key=job_key(j, get_exporter(j.target), inputs_sha256)) for j in jobs]


def _run_jobs(jobs: list[Job], pool: WorkerPool | None, workers: int, root: Path,
              progress: Progress, debug: bool) -> list[JobResult]:
    """Cached jobs (only packaged) and, without workers, all jobs run in this process."""
    remote = [i for i, job in enumerate(jobs) if workers > 1 and not _cached(job)]
    if pool is None and len(remote) <= 1:
        remote = []
    results: dict[int, JobResult] = {}
    for i, job in enumerate(jobs):
        if i not in remote:
            results[i] = run_job(job, progress.stage)
            _finished(progress, results[i])
    if remote:
        own = None if pool is not None else WorkerPool([], root, debug=debug)
        try:
            done = (pool or own).run([jobs[i] for i in remote], min(workers, len(remote)),
                                     progress.stage, lambda result: _finished(progress, result),
                                     progress.calibrated_in)
        finally:
            if own is not None:
                own.close()
        results.update(zip(remote, done, strict=True))
    return [results[i] for i in range(len(jobs))]


def _cached(job: Job) -> bool:
    from edge_export.build.cache import Cache

    return job.cache_key is not None and Cache(job.cache_dir).contains(job.cache_key)


def _remember(opts: ExportOptions, cache: Cache | None, jobs: list[Job],
              results: list[JobResult]) -> None:
    """Hints for the next run's decision to start workers early."""
    for job, result in zip(jobs, results, strict=True):
        if cache is not None and job.cache_key and result.status != "error":
            cache.remember(hint_of(opts.model, job.target, job.recipe.sha256), job.cache_key)


def _finished(progress: Progress, result: JobResult) -> None:
    detail = result.error or result.parity.get("reason", "")
    progress.finish((result.target, result.recipe), result.status, detail)


def _publish(report: RunReport, jobs: list[Job], out: Path, model: ModelInfo, force: bool) -> None:
    with publish_lock(out):
        _publish_locked(report, jobs, out, model, force)


def _publish_locked(report: RunReport, jobs: list[Job], out: Path, model: ModelInfo,
                    force: bool) -> None:
    for job, result in zip(jobs, report.results, strict=True):
        if result.staged is None:
            continue
        archive = None
        if report.publishes(result):
            dest = package_dir(out, model.name, model.version, job.target, job.recipe.name)
            check_replaceable(dest, model, force)  # again under the lock: a run may have raced us
            archive = write_zip(result.staged, result.staged.parent / zip_name(
                model.name, model.version, job.target, job.recipe.name))
        else:
            dest = failed_dir(out, model.name, model.version, job.target, job.recipe.name)
        publish(result.staged, dest)
        if archive is not None:
            os.replace(archive, dest.parent / archive.name)
        report.published[job.key] = dest

