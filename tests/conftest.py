"""Shared fixtures: real exports are expensive, so each is done once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DIGITS = f"{EXAMPLES / 'digits.py'}:build"
TRANSFORMER = f"{EXAMPLES / 'transformer.py'}:build"


def pytest_configure(config) -> None:
    """A fresh content cache per test session (subprocesses inherit it): parity tests must
    exercise the real toolchains, never artifacts cached by an earlier run on this machine."""
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="edge-export-test-cache-")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (what a user runs)."""
    return subprocess.run([sys.executable, "-m", "edge_export", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                          timeout=timeout)


def export_json(*args: str, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli(*args, "--json", **kw)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON object (rc={proc.returncode}):\n{proc.stdout[-2000:]}"
                    f"\nstderr:\n{proc.stderr[-2000:]}")
    return proc, data


@pytest.fixture(scope="session")
def digits_all(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("digits_all")
    proc, data = export_json("--model", DIGITS, "--target", "all", "--out", str(out), "--no-cache",
                             "--validation-data", str(EXAMPLES / "data" / "digits_val.npz"))
    return proc, data, out


@pytest.fixture(scope="session")
def transformer_all(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("transformer_all")
    proc, data = export_json("--model", TRANSFORMER, "--target", "all", "--out", str(out), "--no-cache")
    return proc, data, out
