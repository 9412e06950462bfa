"""Faults during a real export: SIGKILL, concurrent runs, Ctrl-C and a full disk.

Each leaves ``--out`` holding either the previous package, intact, or the new one — never
half of one — and the next run cleans what a dead run left behind.

Signals are sent while the run is held at a named fault point (edge_export.faultpoints),
never after a guessed delay, so the outcome does not depend on how busy the machine is.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_export.faultpoints import AFTER_EXPORT, BEFORE_PUBLISH, PAUSE_ENV
from edge_export.release.bundle import check_integrity

from .conftest import ROOT, run_cli
from .test_bad_inputs import TINY, tmpfs

pytestmark = pytest.mark.slow
NAME = "tiny"


def export_args(out: Path, *extra: str, targets: tuple[str, ...] = ("tflite",)) -> list[str]:
    target_args = [a for t in targets for a in ("--target", t)]
    return ["--model", TINY, *target_args, "--out", str(out), "--name", NAME, "--no-cache",
            "--jobs", "1", *extra]


def start(args: list[str], log: Path, pause_at: tuple[str, Path] | None = None) -> subprocess.Popen:
    """The CLI in its own process group, so a signal reaches it and its workers alike;
    ``pause_at=(point, marker)`` holds it at that fault point until the marker is removed."""
    env = dict(os.environ)
    if pause_at is not None:
        env[PAUSE_ENV] = f"{pause_at[0]}:{pause_at[1]}"
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "edge_export", *args], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_sigint_as_from_a_terminal)


def _sigint_as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT at its default, as a shell in a terminal starts a command.
    An ignored signal is inherited across exec (and Python then installs no Ctrl-C handler); the
    full suite left SIGINT ignored in the pytest process, so the Ctrl-C test's CLI never saw it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the export ended (rc={proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".")) and p.name != ".failed"]


def package(out: Path, target: str = "tflite") -> Path:
    return out / f"{NAME}-0.1.0" / f"{target}-fp32"


ZIP = f"{NAME}-0.1.0-tflite-fp32.zip"


def zipped_manifest(out: Path) -> dict:
    with zipfile.ZipFile(out / f"{NAME}-0.1.0" / ZIP) as zf:
        return json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("manifest.json"))))


def group_gone(pgid: int, limit: float = 30) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def published(tmp_path) -> tuple[Path, dict[str, str]]:
    """--out holding one published package, and the hashes of its files."""
    out = tmp_path / "out"
    proc = run_cli(*export_args(out))
    assert proc.returncode == 0, proc.stderr
    return out, snapshot(out / f"{NAME}-0.1.0")


def test_sigkill_while_writing_keeps_the_previous_package_and_a_rerun_cleans_up(published, tmp_path):
    out, before = published
    # Different parity samples give a different package: publishing it would change the hashes.
    marker = tmp_path / "paused"
    proc = start(export_args(out, "--parity-samples", "3"), tmp_path / "killed.log",
                 pause_at=(BEFORE_PUBLISH, marker))
    wait_for(marker.exists, proc, "the new package was staged")
    assert (next(out.glob(".tmp-*/tflite-fp32")) / "manifest.json").exists(), "staged in full"
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert any(out.glob(".tmp-*")), "killed before publishing, so its temporaries are still there"
    assert snapshot(out / f"{NAME}-0.1.0") == before

    rerun = run_cli(*export_args(out, "--parity-samples", "3"))
    assert rerun.returncode == 0, rerun.stderr
    assert temporaries(out) == []
    manifest = check_integrity(package(out))
    assert len(manifest["golden"]["samples"]) == 4  # the example input plus 3
    assert snapshot(out / f"{NAME}-0.1.0") != before


def test_two_concurrent_exports_into_one_out_do_not_corrupt_each_other(tmp_path):
    """Run A is held with its package staged while run B publishes; then A publishes over B.
    The result is A's package, whole, beside A's own zip: never a mixture of the two runs."""
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    held = start(export_args(out, "--parity-samples", "3"), tmp_path / "held.log",
                 pause_at=(BEFORE_PUBLISH, marker))
    wait_for(marker.exists, held, "run A staged its package")
    other = start(export_args(out, "--parity-samples", "2"), tmp_path / "other.log")
    assert other.wait(timeout=600) == 0, (tmp_path / "other.log").read_text()
    assert len(check_integrity(package(out))["golden"]["samples"]) == 3  # B's: example + 2
    marker.unlink()
    assert held.wait(timeout=600) == 0, (tmp_path / "held.log").read_text()

    manifest = check_integrity(package(out))
    assert len(manifest["golden"]["samples"]) == 4  # A's: example + 3
    assert temporaries(out) == []
    assert sorted(p.name for p in (out / f"{NAME}-0.1.0").iterdir()) == ["tflite-fp32", ZIP]
    assert zipped_manifest(out) == manifest, "the zip beside the package is the same run's package"


def test_concurrent_exports_leave_one_whole_package_whatever_the_timing(tmp_path):
    """Unheld, either run may publish last: assert what must hold either way."""
    out = tmp_path / "out"
    procs = [start(export_args(out, "--parity-samples", str(n)), tmp_path / f"run{n}.log") for n in (2, 3)]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], [(tmp_path / f"run{n}.log").read_text() for n in (2, 3)]
    manifest = check_integrity(package(out))
    assert len(manifest["golden"]["samples"]) in (3, 4)
    assert temporaries(out) == []
    assert zipped_manifest(out) == manifest


def test_ctrl_c_stops_workers_removes_temporaries_and_exits_130(tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    proc = start(export_args(out, "--jobs", "2", targets=("android", "tflite")), tmp_path / "int.log",
                 pause_at=(AFTER_EXPORT, marker))
    wait_for(marker.exists, proc, "the model was exported and the workers started")
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=120)
    log = (tmp_path / "int.log").read_text()
    assert code == 130, log
    assert group_gone(proc.pid), "a worker outlived Ctrl-C"
    assert "Traceback" not in log and "interrupted" in log, log
    assert temporaries(out) == [] and not (out / f"{NAME}-0.1.0").exists()


def test_disk_full_while_writing_removes_temporaries_and_keeps_the_previous_package(tmp_path):
    with tmpfs(tmp_path / "disk", "size=16m") as disk:
        out = disk / "out"
        first = run_cli(*export_args(out))
        assert first.returncode == 0, first.stderr
        before = snapshot(out / f"{NAME}-0.1.0")
        _fill(disk / "filler.bin")
        proc = run_cli(*export_args(out, "--parity-samples", "3"))
        assert proc.returncode == 2, proc.stderr
        assert "no space left on device" in proc.stderr and "Traceback" not in proc.stderr
        assert snapshot(out / f"{NAME}-0.1.0") == before
        assert temporaries(out) == []


def _fill(path: Path) -> None:
    """Fill the file system but for a few kilobytes: enough to start a run, not to finish it."""
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    size = path.stat().st_size
    os.truncate(path, max(size - (48 << 10), 0))
