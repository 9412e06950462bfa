"""``edge-export release CONFIG.toml``: a model zoo release, all or nothing.

The matrix (model x target x recipe) becomes plain-data jobs (``jobs.py``), run by an
executor (``executors.py``). A job whose inputs (weights, model source, recipe, data,
tool versions) match an entry of the previous release reuses that zip. Nothing appears
under ``dist/releases/<version>/`` until every entry passed: the release is assembled in
a temporary directory beside it and renamed into place.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_export.errors import EXIT_TOOLCHAIN, EdgeExportError, UsageError, outcome_code
from edge_export.package.hashing import artifact_sha256, file_sha256
from edge_export.release.executors import run_jobs
from edge_export.release.jobs import JobOutcome, ReleaseJob, load_jobs, with_fingerprints

INDEX = "index.json"
SUMS = "SHA256SUMS"
NOTES = "RELEASE_NOTES.md"
REPORT = "report.html"
INDEX_VERSION = 1

Log = Callable[[str], None]


@dataclass
class ReleaseResult:
    version: str
    path: Path | None
    outcomes: list[JobOutcome] = field(default_factory=list)
    previous: str | None = None


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
            "accuracy": m.get("accuracy"), "verified": outcome.verified,
            "inputs_sha256": outcome.job.fingerprint, "inputs": inputs}


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
    """Some entries failed or were refused: nothing was published (exit 3 when a toolchain broke,
    else 1 for a failed gate, else 4 when the only fault is unverified packages the config does
    not allow; the order of ``errors.outcome_code``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def _unverified_reason(outcome: JobOutcome) -> str:
    reason = outcome.error.removeprefix("not verified: ") or ((outcome.manifest or {}).get("parity") or {}).get(
        "reason", "")
    return f"reused from {outcome.reused_from}: {reason}" if outcome.reused_from else reason


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
    result = ReleaseResult(release_version, None, outcomes, previous[0] if previous else None)
    refused = [o for o in outcomes if not o.ok and o.refused_unverified]
    failed = [o for o in outcomes if not o.ok and not o.refused_unverified]
    if failed or refused:
        toolchain = [EXIT_TOOLCHAIN] if any(o.error_code == EXIT_TOOLCHAIN for o in failed) else []
        code = outcome_code(toolchain, bool(failed), bool(refused))
        parts = []
        if failed:
            parts.append(f"{len(failed)} failed entr{'y' if len(failed) == 1 else 'ies'}: "
                         + "; ".join(f"{o.job.label}: {o.error}" for o in failed))
        if refused:
            parts.append(f"{len(refused)} unverified entr{'y' if len(refused) == 1 else 'ies'} refused "
                         "(nothing ran the artifact; allow_unverified = true in the config releases it): "
                         + "; ".join(f"{o.job.label}: {_unverified_reason(o)}" for o in refused))
        raise ReleaseFailed(f"release {release_version} not published, {'; '.join(parts)}", code)
    clean_leftovers(root)
    tmp = staging_root(root)
    try:
        _write_release(tmp / release_version, release_version, outcomes, inputs, previous)
        publish(tmp / release_version, root / release_version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.path = root / release_version
    return result
