"""``edge-export verify`` and package zips: integrity, golden re-run, unsafe zips, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_export.errors import PackageError, UnsafeInputError
from edge_export.package.archive import extract_zip, write_zip
from tests.conftest import DIGITS, EXAMPLES, export_json, run_cli
from tests.test_bundle import make_package


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize("entry", [
    ("../evil.txt", b"x"),
    ("pkg/../../evil.txt", b"x"),
    ("/tmp/evil-edge-export.txt", b"x"),
    _symlink_entry("pkg/link", "/etc/passwd"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink"])
def test_unsafe_zip_is_refused_with_exit_2_and_nothing_written(tmp_path, entry):
    work = tmp_path / "work"
    work.mkdir()
    bad = _zip(work / "bad.zip", [("pkg/manifest.json", b"{}"), entry])
    proc = run_cli("verify", str(bad), cwd=work)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil-edge-export.txt").exists()
    assert sorted(p.name for p in work.iterdir()) == ["bad.zip"]


def test_oversized_zip_is_refused_before_extracting(tmp_path):
    big = _zip(tmp_path / "big.zip", [("pkg/manifest.json", b"{}"), ("pkg/zeros.bin", bytes(5_000_000))])
    assert big.stat().st_size < 100_000  # compresses well: only the inflated size is over the bound
    proc = run_cli("verify", str(big), "--max-bytes", "1000000")
    assert proc.returncode == 2
    assert "over the 1,000,000-byte limit" in proc.stderr
    dest = tmp_path / "out"
    with pytest.raises(UnsafeInputError):
        extract_zip(big, dest, max_bytes=1_000_000)
    assert not dest.exists()


def test_zip_that_lies_about_its_size_is_stopped(tmp_path):
    big = _zip(tmp_path / "big.zip", [("pkg/zeros.bin", bytes(3_000_000))])
    data = bytearray(big.read_bytes())
    real = (3_000_000).to_bytes(4, "little")
    assert data.count(real) == 2  # local header and central directory
    big.write_bytes(bytes(data.replace(real, (10).to_bytes(4, "little"))))
    dest = tmp_path / "out"
    with pytest.raises((PackageError, UnsafeInputError)):  # both exit 2
        extract_zip(big, dest, max_bytes=1_000_000)
    assert not dest.exists()


def test_package_zip_is_byte_identical_across_builds(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = make_package(tmp_path / "a")
    b = make_package(tmp_path / "b")
    os.utime(b / "labels.txt", (1_700_000_000, 1_700_000_000))
    (b / "parity.json").chmod(0o600)
    name = "digits-0.1.0-android-fp32.zip"
    (tmp_path / "za").mkdir()
    (tmp_path / "zb").mkdir()
    za = write_zip(a, tmp_path / "za" / name)
    zb = write_zip(b, tmp_path / "zb" / name)
    assert za.read_bytes() == zb.read_bytes()
    with zipfile.ZipFile(za) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names) and all(n.startswith("digits-0.1.0-android-fp32/") for n in names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_source_date_epoch_sets_the_timestamps(tmp_path, monkeypatch):
    pkg = make_package(tmp_path / "p")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    with zipfile.ZipFile(write_zip(pkg, tmp_path / "p.zip")) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_verify_rejects_a_directory_without_manifest(tmp_path):
    proc = run_cli("verify", str(tmp_path))
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr


# --- real packages ------------------------------------------------------------------

_SHARED: dict[str, tuple[Path, Path, dict]] = {}


def shared_tflite_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """One real export per session (tflite, the fastest) with --report; test_report uses it too."""
    if "tflite" not in _SHARED:
        out = tmp_path_factory.mktemp("verify_tflite")
        proc, data = export_json("--model", DIGITS, "--target", "tflite", "--out", str(out),
                                 "--eval-data", str(EXAMPLES / "data" / "digits_eval.npz"),
                                 "--report", str(out / "report.html"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        _SHARED["tflite"] = (out / "digits-0.1.0" / "tflite-fp32", out / "report.html", data)
    return _SHARED["tflite"]


@pytest.fixture(scope="session")
def tflite_export(tmp_path_factory) -> tuple[Path, Path, dict]:
    return shared_tflite_export(tmp_path_factory)


@pytest.mark.slow
def test_export_publishes_a_zip_that_verifies(tflite_export, tmp_path):
    package, _, _ = tflite_export
    archive = package.parent / "digits-0.1.0-tflite-fp32.zip"
    for target in (package, archive):
        proc = run_cli("verify", str(target))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "ok: digits 0.1.0 tflite/fp32" in proc.stdout and "re-run on litert" in proc.stdout
    with zipfile.ZipFile(archive) as zf:
        listed = {n.split("/", 1)[1] for n in zf.namelist()}
    assert listed == {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_flipped_artifact_byte_fails_with_exit_1_naming_the_file(tflite_export, tmp_path):
    package, _, _ = tflite_export
    copy = shutil.copytree(package, tmp_path / "tflite-fp32")
    artifact = copy / "model.tflite"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    proc = run_cli("verify", str(copy))
    assert proc.returncode == 1, proc.stderr
    assert "'model.tflite'" in proc.stderr and "does not match" in proc.stderr
    zipped = write_zip(copy, tmp_path / "digits-0.1.0-tflite-fp32.zip")
    proc = run_cli("verify", str(zipped))
    assert proc.returncode == 1 and "'model.tflite'" in proc.stderr


@pytest.mark.slow
def test_golden_outputs_that_the_artifact_does_not_reproduce_fail_naming_the_output(tflite_export, tmp_path):
    """A consistent package (hashes match) whose golden outputs are off: the re-run catches it."""
    package, _, _ = tflite_export
    copy = shutil.copytree(package, tmp_path / "tflite-fp32")
    manifest = json.loads((copy / "manifest.json").read_text())
    rel = manifest["golden"]["samples"][1]["outputs"]["logits"]
    golden = np.fromfile(copy / rel, dtype="<f4")
    (copy / rel).write_bytes((golden + np.float32(0.5)).astype("<f4").tobytes())
    for entry in manifest["files"]:
        if entry["path"] == rel:
            entry["sha256"] = hashlib.sha256((copy / rel).read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("verify", str(copy))
    assert proc.returncode == 1, proc.stderr
    assert "output 'logits'" in proc.stderr


@pytest.mark.slow
def test_sha256sum_accepts_zip_contents(tflite_export, tmp_path):
    """The zip holds exactly the package's files: hashes listed in the manifest check out."""
    package, _, _ = tflite_export
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum not installed")
    manifest = json.loads((package / "manifest.json").read_text())
    sums = "".join(f"{e['sha256']}  {e['path']}\n" for e in manifest["files"])
    (tmp_path / "SUMS").write_text(sums)
    out = extract_zip(package.parent / "digits-0.1.0-tflite-fp32.zip", tmp_path / "x")
    proc = subprocess.run(["sha256sum", "-c", str(tmp_path / "SUMS")], cwd=out / "digits-0.1.0-tflite-fp32",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_zip_stores_incompressible_weights_and_deflates_the_rest(tmp_path):
    """A zip entry is deflated only when deflate shrinks it: weights that barely compress are
    stored (re-deflating 90 MB of them took 12 s of a 26 s export); text is deflated. The zip
    stays a function of the bytes (two writes give the same zip) and round-trips."""
    package = tmp_path / "pkg"
    package.mkdir()
    weights = np.random.default_rng(0).standard_normal(600_000).astype(np.float32).tobytes()
    (package / "model.bin").write_bytes(weights)
    (package / "manifest.json").write_text('{"name": "m"}\n' * 100_000)
    (tmp_path / "again").mkdir()
    first = write_zip(package, tmp_path / "p.zip")
    assert first.read_bytes() == write_zip(package, tmp_path / "again" / "p.zip").read_bytes()
    with zipfile.ZipFile(first) as zf:
        kinds = {Path(i.filename).name: i.compress_type for i in zf.infolist()}
    assert kinds == {"model.bin": zipfile.ZIP_STORED, "manifest.json": zipfile.ZIP_DEFLATED}
    out = extract_zip(first, tmp_path / "out")
    assert (out / "p" / "model.bin").read_bytes() == weights
