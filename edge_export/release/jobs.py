"""A release's jobs: the configuration read into plain-data ``ReleaseJob`` s, each job's
input fingerprint (what its package's bytes depend on, for incremental releases), and
``build_package``, which runs one job through the ordinary export pipeline.

A job carries everything it needs and returns bytes, so it runs the same in-process, in
local worker processes or on Ray workers (``executors.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_export import __version__
from edge_export.errors import EXIT_GATE_FAILED, EXIT_UNVERIFIED, EdgeExportError, UsageError
from edge_export.package.archive import zip_name
from edge_export.package.hashing import artifact_sha256, file_sha256
from edge_export.package.manifest import is_verified

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MODEL_KEYS = {"name", "model", "version", "targets", "recipes", "calibration_data", "eval_data",
               "validation_data", "allow_unverified"}
_RELEASE_KEYS = {"version", "models", "allow_unverified"}
_DATA_KEYS = ("calibration_data", "eval_data", "validation_data")

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
    allow_unverified: bool = False  # release.toml: a package nothing could run may be released
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
    def verified(self) -> bool:
        return self.manifest is not None and is_verified(self.manifest)

    @property
    def ok(self) -> bool:
        """A zip to release: built or reused, and run on its runtime unless the config allows
        unverified packages for this job (a reused package is held to the same rule)."""
        return self.data is not None and (self.verified or self.job.allow_unverified)

    @property
    def refused_unverified(self) -> bool:
        return self.status in ("not-run", "reused") and not self.verified and not self.job.allow_unverified


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


def _flag(entry: dict, key: str, where: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false")
    return value


def load_jobs(config: Path, version: str | None = None) -> tuple[str, list[ReleaseJob]]:
    """The release version and its jobs (without fingerprints); every config problem is a
    usage error raised before anything heavy runs.

    ``allow_unverified = true`` (top level: every model; in a ``[[models]]`` table: that
    model, overriding the top level either way) lets the release take packages whose artifact
    could not be run on its runtime here (parity not-run, manifest ``"verified": false``).
    Without it such a package is refused by name and the release is not published (exit 4)."""
    from edge_export.build.exporter import select_targets

    config = Path(config)
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"release config {config} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read release config {config}: {exc}") from None
    unknown = sorted(set(data) - _RELEASE_KEYS)
    if unknown:
        raise UsageError(f"{config}: unknown key {unknown[0]!r}",
                         hint="a release has version, allow_unverified and [[models]]")
    release_version = _safe(version or data.get("version"), f"{config}: version")
    allow_all = _flag(data, "allow_unverified", str(config), False)
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
        allow = _flag(entry, "allow_unverified", where, allow_all)
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
                                   allow_unverified=allow, **data_paths))
    keys = [j.key for j in jobs]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate:
        raise UsageError(f"{config}: {' '.join(duplicate)} appears twice in the release")
    return release_version, jobs


def _plan(targets: list[str], recipes: list[str], where: str) -> list[tuple[str, str, Any]]:
    """(recipe as given, target, Recipe): a shipped name applies to every target, a recipe
    file to its own target, which must be among the model's targets."""
    from edge_export.build.plan import resolve_recipes
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
    """Everything a package's bytes depend on, edge-export's own code included (its version
    and the hash of its sources): a package built by other code is built again, not reused.
    ``allow_unverified`` is left out: it decides whether a package is taken, not its bytes."""
    from edge_export.build.cache import source_sha256
    from edge_export.build.exporter import get_exporter
    from edge_export.build.plan import resolve_recipes

    (_, recipe), = resolve_recipes([job.target], (job.recipe,))
    exporter = get_exporter(job.target)
    return {
        "name": job.name, "version": job.version, "target": job.target, "recipe": job.recipe_name,
        "recipe_sha256": recipe.sha256, "weights_sha256": weights, "model_source_sha256": source,
        "model_spec": _portable_spec(job.model),
        "data_sha256": {k: _path_hash(getattr(job, k)) for k in _DATA_KEYS},
        "tools": {**exporter.tool_versions(), "edge-export": __version__,
                  "edge-export-source": source_sha256()},
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
                                              quiet=True, allow_unverified=job.allow_unverified, **opt))
        except EdgeExportError as exc:
            return JobOutcome(job, "error", error=exc.one_line(), error_code=exc.exit_code)
        result, = report.results
        if report.publishes(result):
            archive = Path(tmp) / f"{job.name}-{job.version}" / job.zip_name
            return JobOutcome(job, result.status, archive.read_bytes(), result.manifest)
        reason = result.error or result.parity.get("reason", "") or "accuracy gate failed"
        if result.status == "not-run":
            return JobOutcome(job, result.status, manifest=result.manifest, error=f"not verified: {reason}",
                              error_code=EXIT_UNVERIFIED)
        return JobOutcome(job, result.status, error=reason, error_code=result.error_code or EXIT_GATE_FAILED)
