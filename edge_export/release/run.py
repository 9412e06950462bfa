"""``edge-export release CONFIG.toml``: a model zoo release, all or nothing.

The matrix (model x target x recipe) becomes a list of ``ReleaseJob``: plain data that
``build_package`` turns into a package zip by running the ordinary export pipeline in a
private directory. Because a job carries everything it needs and returns bytes, it runs
the same in-process, in local worker processes (``--jobs``) or on Ray workers. A job
whose inputs (weights, model source, recipe, data, tool versions) match an entry of the
previous release reuses that zip. Nothing appears under ``dist/releases/<version>/``
until every entry passed: the release is assembled in a temporary directory beside it
and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_export import __version__
from edge_export.errors import EXIT_GATE_FAILED, EXIT_TOOLCHAIN, EdgeExportError, UsageError
from edge_export.package.archive import zip_name
from edge_export.package.hashing import artifact_sha256, file_sha256

INDEX = "index.json"
SUMS = "SHA256SUMS"
NOTES = "RELEASE_NOTES.md"
REPORT = "report.html"
INDEX_VERSION = 1
PASSING = ("passed", "not-run")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MODEL_KEYS = {"name", "model", "version", "targets", "recipes", "calibration_data", "eval_data",
               "validation_data"}
_DATA_KEYS = ("calibration_data", "eval_data", "validation_data")

Log = Callable[[str], None]


@dataclass(frozen=True)
class ReleaseJob:
    """One package of the release; every field is plain data (it crosses process and
    machine boundaries). Paths are absolute: workers must see the same filesystem."""

    name: str
    version: str
    model: str
    target: str
    recipe: str  # a shipped recipe name or an absolute .toml path
    recipe_name: str
    calibration_data: str | None = None
    eval_data: str | None = None
    validation_data: str | None = None
    fingerprint: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.target, self.recipe_name)

    @property
    def zip_name(self) -> str:
        return zip_name(self.name, self.version, self.target, self.recipe_name)

    @property
    def label(self) -> str:
        return f"{self.name} {self.target}/{self.recipe_name}"


@dataclass
class JobOutcome:
    job: ReleaseJob
    status: str  # passed | not-run | failed | error | reused
    data: bytes | None = None
    manifest: dict[str, Any] | None = None
    error: str = ""
    error_code: int = 0
    reused_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (*PASSING, "reused")


@dataclass
class ReleaseResult:
    version: str
    path: Path | None
    outcomes: list[JobOutcome] = field(default_factory=list)
    previous: str | None = None


# --- configuration -----------------------------------------------------------------

def _resolve_path(base: Path, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what} must be a path (a non-empty string)")
    path = (base / value).resolve()
    if not path.exists():
        raise UsageError(f"{what} {value!r} does not exist (paths are relative to the config file)")
    return str(path)


def _resolve_model(base: Path, spec: str) -> str:
    """File specs are relative to the config; ``package.module:attr`` stays as written."""
    file_part, sep, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if spec.endswith((".pt2", ".pt")) or file_part.endswith(".py"):
        path = _resolve_path(base, file_part if sep else spec, "model")
        return f"{path}{sep}{attr}"
    return spec


def _strings(entry: dict, key: str, where: str, default: list[str] | None = None) -> list[str]:
    value = entry.get(key, default)
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v for v in value)):
        raise UsageError(f"{where}: {key} must be a non-empty list of strings")
    return list(dict.fromkeys(value))


def _safe(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SAFE.match(value):
        raise UsageError(f"{what} {value!r} must be letters, digits and . _ + - "
                         "(it names files and folders)")
    return value


def load_jobs(config: Path, version: str | None = None) -> tuple[str, list[ReleaseJob]]:
    """The release version and its jobs (without fingerprints); every config problem is a
    usage error raised before anything heavy runs."""
    from edge_export.build.exporter import select_targets

    config = Path(config)
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"release config {config} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read release config {config}: {exc}") from None
    unknown = sorted(set(data) - {"version", "models"})
    if unknown:
        raise UsageError(f"{config}: unknown key {unknown[0]!r}", hint="a release has version and [[models]]")
    release_version = _safe(version or data.get("version"), f"{config}: version")
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise UsageError(f"{config}: needs at least one [[models]] table")
    base = config.resolve().parent
    jobs: list[ReleaseJob] = []
    for i, entry in enumerate(models):
        where = f"{config}: models[{i}]"
        extra = sorted(set(entry) - _MODEL_KEYS)
        if extra:
            raise UsageError(f"{where}: unknown key {extra[0]!r}",
                             hint=f"a model takes {', '.join(sorted(_MODEL_KEYS))}")
        for key in ("name", "model"):
            if key not in entry:
                raise UsageError(f"{where}: missing {key!r}")
        name = _safe(entry["name"], f"{where}: name")
        if not isinstance(entry["model"], str):
            raise UsageError(f"{where}: model must be a --model spec string")
        model = _resolve_model(base, entry["model"])
        data_paths = {k: _resolve_path(base, entry[k], f"{where}: {k}") for k in _DATA_KEYS if k in entry}
        recipes = [_resolve_path(base, r, f"{where}: recipe") if r.endswith(".toml") else r
                   for r in _strings(entry, "recipes", where, ["fp32"])]
        targets, skipped = select_targets(tuple(_strings(entry, "targets", where)))
        if skipped:  # a release is all or nothing: "all" must not mean "whatever is installed"
            raise UsageError(f"{where}: targets 'all' includes {skipped[0].target}, which is "
                             f"{skipped[0].reason}", hint=skipped[0].install_command)
        for source, target, recipe in _plan(targets, recipes, where):
            if recipe.calibration_required and "calibration_data" not in data_paths:
                raise UsageError(f"{where}: recipe {recipe.name!r} ({target}) needs calibration_data")
            jobs.append(ReleaseJob(name=name, version=_safe(entry.get("version", release_version),
                                                            f"{where}: version"),
                                   model=model, target=target, recipe=source, recipe_name=recipe.name,
                                   **data_paths))
    keys = [j.key for j in jobs]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate:
        raise UsageError(f"{config}: {' '.join(duplicate)} appears twice in the release")
    return release_version, jobs


def _plan(targets: list[str], recipes: list[str], where: str) -> list[tuple[str, str, Any]]:
    """(recipe as given, target, Recipe): a shipped name applies to every target, a recipe
    file to its own target, which must be among the model's targets."""
    from edge_export.build.pipeline import resolve_recipes
    from edge_export.quant.recipe import is_recipe_file, load_recipe_file

    plan = []
    for source in recipes:
        own = load_recipe_file(source).target if is_recipe_file(source) else None
        if own is not None and own not in targets:
            raise UsageError(f"{where}: recipe file {source} is for target {own}, which is not in targets")
        for target in targets:
            if own in (None, target):
                plan += [(source, t, r) for t, r in resolve_recipes([target], (source,))]
    return plan


# --- inputs fingerprint (incremental releases) -------------------------------------

def _path_hash(path: str | None) -> str | None:
    return None if path is None else artifact_sha256(Path(path))[0]


def fingerprint_inputs(job: ReleaseJob, weights: str, source: str | None) -> dict[str, Any]:
    """Everything a package's bytes depend on, besides the code of edge-export itself
    (whose version is included)."""
    from edge_export.build.exporter import get_exporter
    from edge_export.build.pipeline import resolve_recipes

    (_, recipe), = resolve_recipes([job.target], (job.recipe,))
    exporter = get_exporter(job.target)
    return {
        "name": job.name, "version": job.version, "target": job.target, "recipe": job.recipe_name,
        "recipe_sha256": recipe.sha256, "weights_sha256": weights, "model_source_sha256": source,
        "model_spec": _portable_spec(job.model),
        "data_sha256": {k: _path_hash(getattr(job, k)) for k in _DATA_KEYS},
        "tools": {**exporter.tool_versions(), "edge-export": __version__},
        "runtime": exporter.runtime_requirements(recipe),
    }


def _portable_spec(spec: str) -> str:
    """The spec without the checkout's location, so fingerprints match across machines."""
    file_part, sep, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    return f"{Path(file_part).name}{sep}{attr}" if Path(file_part).is_file() else spec


def with_fingerprints(jobs: list[ReleaseJob]) -> tuple[list[ReleaseJob], dict[tuple, dict]]:
    from edge_export.load.model import load_model
    from edge_export.package.hashing import weights_sha256

    weights: dict[str, tuple[str, str | None]] = {}
    out, inputs = [], {}
    for job in jobs:
        if job.model not in weights:
            loaded = load_model(job.model)
            file_part = job.model.rsplit(":", 1)[0]
            source = file_sha256(Path(file_part)) if Path(file_part).is_file() else None
            weights[job.model] = (weights_sha256(loaded.module), source)
        parts = fingerprint_inputs(job, *weights[job.model])
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        job = ReleaseJob(**{**asdict(job), "fingerprint": digest})
        out.append(job)
        inputs[job.key] = parts
    return out, inputs


# --- one job -------------------------------------------------------------------------

def build_package(job: ReleaseJob) -> JobOutcome:
    """Export one package with the ordinary pipeline and return its zip (never raises for
    a failed export: the outcome says why)."""
    from edge_export.build.pipeline import ExportOptions, run_export

    opt = {k: Path(v) for k in _DATA_KEYS if (v := getattr(job, k)) is not None}
    with tempfile.TemporaryDirectory(prefix="edge-export-release-job-") as tmp:
        try:
            report = run_export(ExportOptions(model=job.model, targets=(job.target,), recipes=(job.recipe,),
                                              out=Path(tmp), name=job.name, version=job.version, jobs=1,
                                              quiet=True, **opt))
        except EdgeExportError as exc:
            return JobOutcome(job, "error", error=exc.one_line(), error_code=exc.exit_code)
        result, = report.results
        if result.status in PASSING:
            archive = Path(tmp) / f"{job.name}-{job.version}" / job.zip_name
            return JobOutcome(job, result.status, archive.read_bytes(), result.manifest)
        reason = result.error or result.parity.get("reason", "") or "accuracy gate failed"
        return JobOutcome(job, result.status, error=reason, error_code=result.error_code or EXIT_GATE_FAILED)


# --- executors -------------------------------------------------------------------------

def run_jobs(jobs: list[ReleaseJob], executor: str, workers: int, keep_going: bool,
             on_done: Callable[[JobOutcome], None], ray_address: str | None = None) -> list[JobOutcome]:
    """Run the jobs; without ``keep_going`` stop scheduling at the first failure."""
    if not jobs:
        return []
    if executor == "ray":
        return _run_ray(jobs, workers, keep_going, on_done, ray_address)
    if workers <= 1 or len(jobs) == 1:
        outcomes = []
        for job in jobs:
            outcomes.append(build_package(job))
            on_done(outcomes[-1])
            if not outcomes[-1].ok and not keep_going:
                break
        return outcomes
    return _run_processes(jobs, workers, keep_going, on_done)


def _run_processes(jobs: list[ReleaseJob], workers: int, keep_going: bool,
                   on_done: Callable[[JobOutcome], None]) -> list[JobOutcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    outcomes = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        pending = {pool.submit(build_package, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                outcomes.append(fut.result())
                on_done(outcomes[-1])
            if not keep_going and any(not o.ok for o in outcomes):
                for fut in pending:
                    fut.cancel()
                pending = {f for f in pending if not f.cancelled()}
    return outcomes


def _run_ray(jobs: list[ReleaseJob], workers: int, keep_going: bool,
             on_done: Callable[[JobOutcome], None], address: str | None) -> list[JobOutcome]:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray", hint="pip install 'edge-export[ray]'") from None
    started = not ray.is_initialized()
    if started:
        local = {} if address else {"num_cpus": workers}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        remote = ray.remote(num_cpus=1)(build_package)
        pending = [remote.remote(job) for job in jobs]
        outcomes = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            outcomes.append(ray.get(done[0]))
            on_done(outcomes[-1])
            if not outcomes[-1].ok and not keep_going:
                for ref in pending:
                    ray.cancel(ref)
                break
        return outcomes
    finally:
        if started:
            ray.shutdown()


# --- previous releases -------------------------------------------------------------

def _version_key(version: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.+-]", version))


def previous_releases(root: Path) -> dict[str, dict[str, Any]]:
    """Published releases under ``root`` (version -> index), oldest first."""
    found = {}
    if root.is_dir():
        for entry in root.iterdir():
            index = entry / INDEX
            if entry.name.startswith(".") or not index.is_file():
                continue
            try:
                found[entry.name] = json.loads(index.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
    return dict(sorted(found.items(), key=lambda kv: _version_key(kv[0])))


def _reusable(job: ReleaseJob, root: Path, candidates: dict[str, dict[str, Any]]) -> JobOutcome | None:
    for version, index in reversed(candidates.items()):
        for entry in index.get("packages", []):
            if entry.get("inputs_sha256") != job.fingerprint or entry.get("file") != job.zip_name:
                continue
            path = root / version / entry["file"]
            if path.is_file() and file_sha256(path) == entry.get("sha256"):
                return JobOutcome(job, "reused", path.read_bytes(), _manifest_of(path),
                                  reused_from=version)
    return None


def _manifest_of(zip_path: Path) -> dict[str, Any]:
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/manifest.json"))
        return json.loads(zf.read(name))


# --- assembling the release ----------------------------------------------------------

def _index_entry(outcome: JobOutcome, sha: str, size: int, inputs: dict[str, Any]) -> dict[str, Any]:
    m = outcome.manifest or {}
    return {"name": m["name"], "version": m["version"], "target": m["target"],
            "recipe": m["recipe"]["name"], "file": outcome.job.zip_name, "sha256": sha, "zip_bytes": size,
            "artifact": m["artifact"], "runtime": m["runtime"]["runtime"], "parity": m["parity"],
            "accuracy": m.get("accuracy"), "inputs_sha256": outcome.job.fingerprint, "inputs": inputs}


def _delta(new: float | None, old: float | None, fmt: str) -> str:
    if new is None or old is None:
        return "—"
    return format(new - old, "+" + fmt)


def release_notes(version: str, entries: list[dict[str, Any]], outcomes: dict[tuple, JobOutcome],
                  previous: tuple[str, dict[str, Any]] | None) -> str:
    old = {(e["name"], e["target"], e["recipe"]): e for e in (previous[1]["packages"] if previous else [])}
    lines = [f"# Release {version}", ""]
    lines.append(f"Deltas are against release {previous[0]}." if previous
                 else "No previous release: this is the first.")
    for name in sorted({e["name"] for e in entries}):
        lines += ["", f"## {name}", "",
                  "| target | recipe | version | artifact bytes | Δ bytes | accuracy % | Δ accuracy | "
                  "worst SNR dB | Δ SNR | worst cosine | parity | build |",
                  "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|"]
        for e in (e for e in entries if e["name"] == name):
            key = (e["name"], e["target"], e["recipe"])
            prev = old.get(key)
            acc = (e.get("accuracy") or {}).get("artifact")
            prev_acc = ((prev or {}).get("accuracy") or {}).get("artifact")
            snr = e["parity"].get("worst", {}).get("snr_db")
            prev_snr = (prev or {}).get("parity", {}).get("worst", {}).get("snr_db")
            cosine = e["parity"].get("worst", {}).get("cosine")
            outcome = outcomes[key]
            build = f"reused from {outcome.reused_from} (inputs unchanged)" if outcome.reused_from else "built"
            lines.append(
                f"| {e['target']} | {e['recipe']} | {e['version']} | {e['artifact']['bytes']:,} | "
                f"{_delta(e['artifact']['bytes'], (prev or {}).get('artifact', {}).get('bytes'), ',d')} | "
                f"{'—' if acc is None else f'{acc:.2f}'} | {_delta(acc, prev_acc, '.2f')} | "
                f"{'—' if snr is None else f'{snr:.1f}'} | {_delta(snr, prev_snr, '.1f')} | "
                f"{'—' if cosine is None else f'{cosine:.6f}'} | {e['parity']['status']} | {build} |")
        if previous:
            gone = sorted(k for k in old if k[0] == name and k not in outcomes)
            if gone:
                lines += ["", "Removed since " + previous[0] + ": " + ", ".join(f"{t}/{r}" for _, t, r in gone)]
    return "\n".join(lines) + "\n"


def _write_release(folder: Path, version: str, outcomes: list[JobOutcome], inputs: dict[tuple, dict],
                   previous: tuple[str, dict[str, Any]] | None) -> None:
    from edge_export.verify.report import write_report

    folder.mkdir(parents=True)
    entries = []
    for outcome in sorted(outcomes, key=lambda o: o.job.key):
        path = folder / outcome.job.zip_name
        path.write_bytes(outcome.data or b"")
        entries.append(_index_entry(outcome, *artifact_sha256(path), inputs[outcome.job.key]))
    index = {"index_version": INDEX_VERSION, "release": version, "packages": entries}
    (folder / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    sums = sorted([*(e["file"] for e in entries), INDEX])
    (folder / SUMS).write_text("".join(f"{file_sha256(folder / f)}  {f}\n" for f in sums), encoding="utf-8")
    (folder / NOTES).write_text(release_notes(version, entries, {o.job.key: o for o in outcomes}, previous),
                                encoding="utf-8")
    write_report([folder / e["file"] for e in entries], folder / REPORT, title=f"Release {version}")


class ReleaseFailed(EdgeExportError):
    """Some entries failed: nothing was published (exit 1, or 3 when a toolchain broke)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def release(config: Path, root: Path, *, executor: str = "local", workers: int = 1, keep_going: bool = False,
            ray_address: str | None = None, version: str | None = None, log: Log = print) -> ReleaseResult:
    from edge_export.package.manifest import clean_leftovers, publish, staging_root

    release_version, jobs = load_jobs(config, version)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root} is a file, not a directory")
    history = previous_releases(root)
    older = [v for v in history if _version_key(v) < _version_key(release_version)]
    previous = (older[-1], history[older[-1]]) if older else None
    candidates = {v: history[v] for v in ([older[-1]] if older else []) +
                  ([release_version] if release_version in history else [])}
    log(f"release {release_version}: {len(jobs)} package(s); hashing inputs")
    jobs, inputs = with_fingerprints(jobs)
    outcomes, todo = [], []
    for job in jobs:
        reused = _reusable(job, root, candidates)
        if reused:
            log(f"  {job.label}: reused from {reused.reused_from} (inputs unchanged)")
            outcomes.append(reused)
        else:
            todo.append(job)

    def done(outcome: JobOutcome) -> None:
        log(f"  {outcome.job.label}: {outcome.status}" + (f" — {outcome.error}" if outcome.error else ""))

    outcomes += run_jobs(todo, executor, workers, keep_going, done, ray_address)
    failed = [o for o in outcomes if not o.ok]
    result = ReleaseResult(release_version, None, outcomes, previous[0] if previous else None)
    if failed:
        code = EXIT_TOOLCHAIN if any(o.error_code == EXIT_TOOLCHAIN for o in failed) else EXIT_GATE_FAILED
        names = "; ".join(f"{o.job.label}: {o.error}" for o in failed)
        raise ReleaseFailed(f"release {release_version} not published, {len(failed)} failed entr"
                            f"{'y' if len(failed) == 1 else 'ies'}: {names}", code)
    clean_leftovers(root)
    tmp = staging_root(root)
    try:
        _write_release(tmp / release_version, release_version, outcomes, inputs, previous)
        publish(tmp / release_version, root / release_version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.path = root / release_version
    return result
