"""Nothing unverified leaves quietly: a package whose artifact its runtime could not run (a
real ``not-run``: tests/unverified_model.py's ios artifact needs Core ML's ``resample``, which
the Linux MIL reference executor lacks) exits 4 and stays under ``.failed/`` unless
``--allow-unverified`` publishes it with ``"verified": false``; the fast path, ``verify`` and
``release`` follow the same rule."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_export.build.job import JobResult
from edge_export.build.pipeline import RunReport
from edge_export.errors import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_TOOLCHAIN,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    UsageError,
    outcome_code,
)
from edge_export.release.jobs import JobOutcome, ReleaseJob, load_jobs
from tests.conftest import ROOT, export_json, run_cli

WARP = f"{ROOT / 'tests' / 'unverified_model.py'}:build"
PACKAGE = Path("unverified_model-build-0.1.0")
NOT_COVERED = "the Linux reference executor does not cover op type(s): resample"


# --- the rule, without a toolchain ------------------------------------------------------

def test_exit_code_precedence() -> None:
    assert outcome_code([], False, False) == EXIT_OK
    assert outcome_code([], False, True) == EXIT_UNVERIFIED == 4
    assert outcome_code([], True, True) == EXIT_GATE_FAILED
    assert outcome_code([EXIT_USAGE], True, True) == EXIT_USAGE
    assert outcome_code([EXIT_USAGE, EXIT_TOOLCHAIN], True, True) == EXIT_TOOLCHAIN


def _result(status: str) -> JobResult:
    return JobResult("ios", f"r-{status}", status, parity={"status": status} if status != "error" else {},
                     error_code=EXIT_TOOLCHAIN if status == "error" else 0)


@pytest.mark.parametrize(("statuses", "allowed", "code"), [
    (["passed", "not-run"], False, EXIT_UNVERIFIED),
    (["passed", "not-run"], True, EXIT_OK),
    (["failed", "not-run"], False, EXIT_GATE_FAILED),
    (["failed", "not-run"], True, EXIT_GATE_FAILED),
    (["error", "failed", "not-run"], False, EXIT_TOOLCHAIN),
])
def test_run_report_exit_code_and_what_it_publishes(statuses: list[str], allowed: bool, code: int) -> None:
    report = RunReport([_result(s) for s in statuses], allow_unverified=allowed)
    assert report.exit_code == code
    assert [report.publishes(r) for r in report.results] == [s == "passed" or (s == "not-run" and allowed)
                                                             for s in statuses]
    assert [r.verified for r in report.results] == [s in ("passed", "failed") for s in statuses]


def _config(folder: Path, top: str = "", model: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "release.toml"
    path.write_text(f'version = "1.0.0"\n{top}\n[[models]]\nname = "warp"\nmodel = "{WARP}"\n'
                    f'targets = ["ios"]\n{model}\n')
    return path


def test_release_config_allow_unverified_top_level_and_per_model(tmp_path: Path) -> None:
    allowed = {name: load_jobs(_config(tmp_path / name, top, model))[1][0].allow_unverified
               for name, top, model in [("default", "", ""),
                                        ("release", "allow_unverified = true", ""),
                                        ("model", "", "allow_unverified = true"),
                                        ("override", "allow_unverified = true", "allow_unverified = false")]}
    assert allowed == {"default": False, "release": True, "model": True, "override": False}
    with pytest.raises(UsageError, match="allow_unverified must be true or false"):
        load_jobs(_config(tmp_path / "bad", 'allow_unverified = "yes"'))


def test_a_reused_unverified_package_is_held_to_the_same_rule() -> None:
    job = ReleaseJob("warp", "1.0.0", WARP, "ios", "fp32", "fp32")
    manifest = {"verified": False, "parity": {"status": "not-run"}}
    assert not JobOutcome(job, "reused", b"zip", manifest, reused_from="0.9.0").ok
    allowed = ReleaseJob("warp", "1.0.0", WARP, "ios", "fp32", "fp32", allow_unverified=True)
    assert JobOutcome(allowed, "reused", b"zip", manifest, reused_from="0.9.0").ok
    old = {"parity": {"status": "not-run"}}  # a manifest written before "verified" existed
    assert not JobOutcome(job, "reused", b"zip", old, reused_from="0.9.0").ok


# --- real exports ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path, Path]:
    """android (runs) and ios (nothing can run it here), without --allow-unverified."""
    base = tmp_path_factory.mktemp("unverified")
    proc, data = export_json("--model", WARP, "--target", "android", "--target", "ios", "--out", str(base / "out"),
                             "--cache-dir", str(base / "cache"))
    return proc, data, base / "out", base / "cache"


@pytest.mark.slow
def test_unverified_exits_4_and_is_kept_under_failed(refused) -> None:
    proc, data, out, _ = refused
    assert proc.returncode == EXIT_UNVERIFIED, proc.stderr[-3000:]
    assert data["ok"] is False and data["error"]["code"] == EXIT_UNVERIFIED
    assert "ios/fp32: not verified, kept under .failed/" in data["error"]["message"]
    rows = {p["target"]: (p["status"], p["verified"]) for p in data["packages"]}
    assert rows == {"android": ("passed", True), "ios": ("not-run", False)}
    ios = next(p for p in data["packages"] if p["target"] == "ios")
    assert NOT_COVERED in ios["parity"]["reason"]
    assert (out / PACKAGE / "android-fp32" / "manifest.json").is_file()
    assert not (out / PACKAGE / "ios-fp32").exists()
    assert [p.name for p in (out / PACKAGE).glob("*.zip")] == ["unverified_model-build-0.1.0-android-fp32.zip"]
    kept = json.loads((out / ".failed" / PACKAGE / "ios-fp32" / "manifest.json").read_text())
    assert kept["verified"] is False and kept["parity"]["status"] == "not-run"
    assert json.loads((out / PACKAGE / "android-fp32" / "manifest.json").read_text())["verified"] is True


@pytest.mark.slow
def test_allow_unverified_publishes_it_marked_and_the_fast_path_says_the_same(refused, tmp_path: Path) -> None:
    _, _, _, cache = refused
    args = ["--model", WARP, "--target", "ios", "--cache-dir", str(cache), "--allow-unverified"]
    proc, data = export_json(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    package, = data["packages"]
    assert data["ok"] is True and (package["status"], package["verified"]) == ("not-run", False)
    published = tmp_path / "out" / PACKAGE / "ios-fp32"
    assert json.loads((published / "manifest.json").read_text())["verified"] is False
    assert [p.name for p in published.parent.glob("*.zip")] == ["unverified_model-build-0.1.0-ios-fp32.zip"]

    warm, again = export_json(*args, "--out", str(tmp_path / "warm"))  # served by the fast path
    assert warm.returncode == EXIT_OK, warm.stderr[-3000:]
    hit, = again["packages"]
    assert set(hit["timings"]) == {"cached", "package"}
    assert (hit["status"], hit["verified"], again["ok"]) == ("not-run", False, True)
    human = run_cli(*args, "--out", str(tmp_path / "warm"))
    assert human.returncode == EXIT_OK, human.stderr[-3000:]
    assert "ios/fp32 published unverified" in " ".join(human.stdout.split())  # the last line, on stdout

    # The flag is part of the fast path's key: without it the same model is refused again.
    strict = run_cli("--model", WARP, "--target", "ios", "--cache-dir", str(cache), "--out", str(tmp_path / "strict"))
    assert strict.returncode == EXIT_UNVERIFIED, strict.stderr[-3000:]
    assert not (tmp_path / "strict" / PACKAGE / "ios-fp32").exists()

    checked = run_cli("verify", str(published))  # nothing on this host can re-run its goldens either
    assert checked.returncode == EXIT_UNVERIFIED, checked.stderr[-3000:]
    assert "golden outputs were not re-run" in checked.stderr and NOT_COVERED in checked.stderr
    accepted = run_cli("verify", str(published), "--allow-unverified")
    assert accepted.returncode == EXIT_OK, accepted.stderr[-3000:]
    assert accepted.stderr.startswith("warning: golden outputs not re-run")


@pytest.mark.slow
def test_release_refuses_unverified_unless_the_config_allows_it(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    proc = run_cli("release", str(_config(tmp_path / "strict")), "--out", str(root), "--jobs", "1")
    assert proc.returncode == EXIT_UNVERIFIED, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: release 1.0.0 not published, 1 unverified entry refused"), error
    assert "warp ios/fp32: " in error and NOT_COVERED in error
    assert not root.exists() or not any(root.iterdir())

    allowed = run_cli("release", str(_config(tmp_path / "allowed", model="allow_unverified = true")),
                      "--out", str(root), "--jobs", "1")
    assert allowed.returncode == EXIT_OK, allowed.stderr[-3000:]
    assert "unverified, allowed by the config: warp ios/fp32" in allowed.stdout
    index = json.loads((root / "1.0.0" / "index.json").read_text())
    assert [(e["target"], e["verified"], e["parity"]["status"]) for e in index["packages"]] == [
        ("ios", False, "not-run")]

