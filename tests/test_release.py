"""``edge-export release``: determinism, all-or-nothing, incremental reuse, checksums, Ray."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT, run_cli

CONFIG = """version = "{version}"

[[models]]
name = "digits"
model = "{examples}/digits.py:build"
version = "1.0.0"
targets = ["android", "tflite"]
recipes = {recipes}
eval_data = "{examples}/data/digits_eval.npz"
"""


def _config(folder: Path, version: str, recipes: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"release-{version}.toml"
    path.write_text(CONFIG.format(version=version, examples=EXAMPLES.as_posix(),
                                  recipes=json.dumps(recipes or ["fp32"])))
    return path


def _release(config: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("release", str(config), "--out", str(out), *args, timeout=1200)


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Release 1.0.0 (digits on android + tflite, fp32) with two local worker processes."""
    base = tmp_path_factory.mktemp("release")
    proc = _release(_config(base, "1.0.0"), base / "releases", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "releases", proc


@pytest.fixture(scope="session")
def rebuilt(tmp_path_factory) -> tuple[Path, str]:
    """The same release built again from scratch elsewhere: on Ray when it is installed."""
    base = tmp_path_factory.mktemp("rebuild")
    executor = "ray" if _ray_available() else "local"
    proc = _release(_config(base, "1.0.0"), base / "releases", "--executor", executor, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base / "releases" / "1.0.0", executor


pytestmark = pytest.mark.slow


def test_release_layout_index_and_notes(released):
    root, proc = released
    folder = root / "1.0.0"
    assert sorted(p.name for p in root.iterdir()) == ["1.0.0"]  # no temporaries left
    assert sorted(p.name for p in folder.iterdir()) == [
        "RELEASE_NOTES.md", "SHA256SUMS", "digits-1.0.0-android-fp32.zip", "digits-1.0.0-tflite-fp32.zip",
        "index.json", "report.html"]
    index = json.loads((folder / "index.json").read_text())
    assert [(p["target"], p["recipe"]) for p in index["packages"]] == [("android", "fp32"), ("tflite", "fp32")]
    for entry in index["packages"]:
        assert entry["sha256"] == hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
        assert entry["artifact"]["bytes"] > 10_000
        assert entry["parity"]["status"] == "passed" and entry["parity"]["worst"]["cosine"] > 0.9999
        assert entry["accuracy"]["samples"] > 0 and entry["accuracy"]["drop"] <= 1.0
    notes = (folder / "RELEASE_NOTES.md").read_text()
    assert "## digits" in notes and "No previous release" in notes
    assert notes.count("| built |") == 2


def test_sha256sum_checks_the_release(released):
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum not installed")
    folder = released[0] / "1.0.0"
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK") == 3  # two zips and index.json


def test_every_released_package_verifies(released):
    for archive in sorted((released[0] / "1.0.0").glob("*.zip")):
        proc = run_cli("verify", str(archive))
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_two_releases_from_scratch_are_byte_identical(released, rebuilt):
    first = released[0] / "1.0.0"
    second, _ = rebuilt
    assert (first / "SHA256SUMS").read_text() == (second / "SHA256SUMS").read_text()


def test_ray_executor_builds_the_same_packages_as_local_workers(released, rebuilt):
    pytest.importorskip("ray")
    second, executor = rebuilt
    assert executor == "ray"
    first = released[0] / "1.0.0"
    zips = sorted(p.name for p in first.glob("*.zip"))
    assert zips == sorted(p.name for p in second.glob("*.zip"))
    for name in zips:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_unchanged_inputs_reuse_the_previous_packages(released, tmp_path):
    root, _ = released
    before = _tree(root / "1.0.0")
    proc = _release(_config(tmp_path, "1.1.0"), root, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("reused from 1.0.0 (inputs unchanged)") == 2
    new = root / "1.1.0"
    for archive in (root / "1.0.0").glob("*.zip"):
        assert (new / archive.name).read_bytes() == archive.read_bytes()
    notes = (new / "RELEASE_NOTES.md").read_text()
    assert "Deltas are against release 1.0.0." in notes
    assert notes.count("reused from 1.0.0 (inputs unchanged)") == 2
    assert notes.count("| +0 |") >= 2  # artifact bytes unchanged
    assert _tree(root / "1.0.0") == before


def test_a_failing_entry_publishes_nothing_and_keep_going_reports_all(released, tmp_path):
    """Recipes the artifacts cannot meet (SNR 1000 dB): the gate fails honestly on the runtime."""
    root, _ = released
    strict = []
    for target in ("android", "tflite"):
        text = (ROOT / "recipes" / target / "fp32.toml").read_text()
        text = text.replace('name = "fp32"', 'name = "strict"').replace("snr_db = 60.0", "snr_db = 1000.0")
        assert 'name = "strict"' in text and "snr_db = 1000.0" in text
        (tmp_path / f"{target}-strict.toml").write_text(text)
        strict.append(str(tmp_path / f"{target}-strict.toml"))
    before = {p.name: _tree(p) for p in root.iterdir()}
    proc = _release(_config(tmp_path, "2.0.0", ["fp32", *strict]), root, "--jobs", "2", "--keep-going")
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: release 2.0.0 not published, 2 failed entries")
    assert "digits android/strict" in error and "digits tflite/strict" in error and "snr_db" in error
    assert {p.name: _tree(p) for p in root.iterdir()} == before  # no 2.0.0, no temporaries


def test_release_report_has_one_image_per_package(released):
    from tests.test_report import package_sections

    page = (released[0] / "1.0.0" / "report.html").read_text()
    sections = package_sections(page)
    assert len(sections) == 2
    assert all(s.count("<img ") == 1 for s in sections)
