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
from edge_export.build.exporter import ALL_TARGETS, Availability, select_targets, target_names
from edge_export.build.job import Job, JobResult, ModelInfo, run_job
from edge_export.build.workers import WorkerPool
from edge_export.cli.progress import Progress
from edge_export.errors import (
    CannotCarry,
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
from edge_export.quant.recipe import Recipe, builtin_aliases, builtin_recipes, is_recipe_file, load_recipe_file

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


def resolve_targets(names: tuple[str, ...]) -> list[str]:
    """Targets to build; ``all`` means the installed ones (see exporter.select_targets)."""
    return select_targets(names)[0]


def resolve_recipes(targets: list[str], requested: tuple[str, ...],
                    calibrated: bool = False) -> list[tuple[str, Recipe]]:
    """The (target, recipe) matrix for targets named explicitly: a recipe a target does not
    have is a usage error (see plan_recipes)."""
    return plan_recipes(targets, requested, calibrated=calibrated)[0]


def plan_targets_and_recipes(names: tuple[str, ...], requested: tuple[str, ...], calibrated: bool
                             ) -> tuple[list[str], list[tuple[str, Recipe]], list[Availability]]:
    """``--target`` and ``--recipe`` as the run will take them: the targets, the (target,
    recipe) plan, and what ``--target all`` left out (not installed, or without the recipe)."""
    targets, skipped = select_targets(names)
    explicit = {n for n in names if n != ALL_TARGETS}
    plan, refused = plan_recipes(targets, requested, calibrated=calibrated,
                                 optional=frozenset(t for t in targets if t not in explicit))
    return targets, plan, skipped + refused


def plan_recipes(targets: list[str], requested: tuple[str, ...], *, calibrated: bool = False,
                 optional: frozenset[str] = frozenset()) -> tuple[list[tuple[str, Recipe]], list[Availability]]:
    """The (target, recipe) matrix, and the ``optional`` targets left out.

    A shipped name applies to every target, a recipe file to its own. A portable name
    (``int8``, ``int4``: recipes/<target>/aliases/) becomes each target's own recipe, the
    ``calibrated`` one when calibration data is given; the recipe keeps the name asked for in
    ``requested``. A target without a requested recipe is refused when it was named, and left
    out (one Availability naming every recipe it lacks) when ``--target all`` brought it in
    (``optional``); when no target is left, the first refusal is raised."""
    files = [load_recipe_file(r) for r in requested if is_recipe_file(r)]
    names = [r for r in requested if not is_recipe_file(r)]
    plan: list[tuple[str, Recipe]] = []
    refusals: dict[str, list[tuple[str, UsageError]]] = {}
    for target in targets:
        for name in names:
            try:
                recipe = _shipped_recipe(target, name, calibrated)
            except UsageError as exc:
                if target not in optional:
                    raise
                refusals.setdefault(target, []).append((name, exc))
                continue
            if all((t, r.name) != (target, recipe.name) for t, r in plan):
                plan.append((target, recipe))
        plan.extend((target, r) for r in files if r.target == target)
    for recipe in files:
        if recipe.target not in targets:
            raise UsageError(f"recipe file {recipe.name!r} is for target {recipe.target}, "
                             f"which is not among --target {', '.join(targets)}")
        if not recipe.supported:
            raise UsageError(f"recipe file {recipe.name!r} says it is unsupported: "
                             f"{recipe.unsupported}")
    if not plan and refusals:
        raise next(iter(refusals.values()))[0][1]
    skipped = [Availability(target, refusal="; ".join(exc.message for _, exc in refused),
                            recipes=tuple(name for name, _ in refused))
               for target, refused in refusals.items()]
    return plan, skipped


def _shipped_recipe(target: str, name: str, calibrated: bool) -> Recipe:
    """The target's recipe ``name``, or the one its portable name resolves to."""
    shipped = builtin_recipes(target)
    alias = builtin_aliases(target).get(name)
    if alias is not None:
        return replace(shipped[alias.resolve(calibrated)], requested=name)
    recipe = shipped.get(name)
    supported = sorted(n for n, r in shipped.items() if r.supported)
    hint = f"{target} supports: {', '.join(supported)}; portable: {', '.join(sorted(builtin_aliases(target)))}"
    if recipe is None:
        raise UsageError(f"unknown recipe {name!r} for target {target}", hint=hint)
    if not recipe.supported:
        raise UsageError(f"recipe {name!r} is not supported on {target}: {recipe.unsupported}", hint=hint)
    return recipe


def override_keep_float(plan: list[tuple[str, Recipe]],
                        value: str | None) -> list[tuple[str, Recipe]]:
    """``--keep-float auto|none``: every recipe whose scheme honours keep_float gets it (its own
    keep_float replaced, ``none`` by an empty list; a different sha256, so the cache keeps
    both); others are unchanged."""
    if value is None:
        return plan
    keep: str | list[str] = [] if value == "none" else value
    import hashlib

    from edge_export.build.exporter import get_exporter

    out = []
    for target, recipe in plan:
        if get_exporter(target).schemes.honours_keep_float(recipe.scheme):
            recipe = replace(recipe, params={**recipe.params, "keep_float": keep},
                             sha256=hashlib.sha256(f"{recipe.sha256}|keep_float={value}".encode())
                             .hexdigest())
        out.append((target, recipe))
    return out


PREQUANTIZED = "prequantized"
FLOAT_RECIPE = "fp32"


def compose_with_compression(plan: list[tuple[str, Recipe]], compression: dict,
                             explicit: frozenset[str] = frozenset()
                             ) -> tuple[list[tuple[str, Recipe]], list[Availability]]:
    """A model the user already quantized keeps its quantization: the float recipe becomes
    the target's recipe that declares it ``carries`` it (recipes/<target>/*.toml: a PT2E graph
    ships as ``prequantized``, torchao weights as the recipe of the same or the closest
    scheme, "same" preferred); any other recipe would quantize it again and is refused,
    never applied silently.

    A target that cannot carry the model is refused when named in ``explicit``; one that
    ``--target all`` brought in is left out (returned, to be reported), unless none is left."""
    quantized = compression.get("quantization")
    if not quantized:
        for target, recipe in plan:
            if recipe.name == PREQUANTIZED:
                raise UsageError(f"recipe {PREQUANTIZED!r} ({target}) is for models quantized with "
                                 "PT2E before export; this model is float",
                                 hint="choose a quantization recipe, e.g. --recipe int8-static")
        return plan, []
    composed: list[tuple[str, Recipe]] = []
    left_out: list[tuple[str, UsageError]] = []
    for target, recipe in plan:
        try:
            own = carried_recipe(target, recipe, quantized)
        except CannotCarry as exc:
            if target in explicit:
                raise
            left_out.append((target, exc))
            continue
        if (target, own) not in composed:
            composed.append((target, own))
    if not composed:
        raise left_out[0][1]
    skipped = {t: Availability(t, refusal=exc.message) for t, exc in left_out}
    return composed, list(skipped.values())


def _carriers(target: str, quantized: str) -> list[Recipe]:
    """The target's recipes declaring they carry ``quantized``, "same" before "closest"."""
    declared = [r for r in builtin_recipes(target).values() if quantized in r.carries]
    return sorted(declared, key=lambda r: (not r.supported, r.carries[quantized] != "same", r.name))


def carried_recipe(target: str, recipe: Recipe, quantized: str) -> Recipe:
    """The recipe ``target`` ships a model quantized as ``quantized`` with (the requested
    ``recipe`` must be the float one or that recipe itself, or a recipe file that declares it
    carries it, e.g. to gate quality against float with a ``[goal]``), or CannotCarry naming
    the targets that can."""
    if quantized in recipe.carries and recipe.supported:
        return recipe
    carriers = _carriers(target, quantized)
    own = carriers[0] if carriers and carriers[0].supported else None
    if own is None:
        able = [t for t in target_names() if any(r.supported for r in _carriers(t, quantized))]
        why = "; ".join(f"{r.name}: {r.unsupported}" for r in carriers) or "no recipe carries it"
        raise CannotCarry(f"target {target} cannot carry a {quantized} model ({why})",
                          hint=f"targets that can: {', '.join(able)}")
    if recipe.name not in (FLOAT_RECIPE, own.name):
        raise UsageError(f"the model is already quantized ({quantized}); --recipe {recipe.name} "
                         f"({target}) would quantize it again",
                         hint=f"pass no --recipe: it ships as {target}'s {own.name!r}")
    return own


def refuse_dynamic(targets: list[str]) -> None:
    """--dynamic on a target whose exporter declares it cannot take dynamic dimensions."""
    from edge_export.build.exporter import exporter_class

    for target in targets:
        reason = exporter_class(target).dynamic_dims_refusal
        if reason:
            able = [t for t in target_names() if not exporter_class(t).dynamic_dims_refusal]
            raise UsageError(f"target {target} cannot take --dynamic: {reason}",
                             hint=f"targets that can: {', '.join(able)}; or export {target} with static shapes")


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

