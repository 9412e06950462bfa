"""Install what you use: one extra per target.

The slow tests build a second environment holding only ``edge-export[tflite]`` (a real
pip install of this source tree, pins from constraints.txt) and use it like a user who
ships only to Android via LiteRT: export and verify work, the other targets are refused
with the pip command that installs them, and verify of a package whose runtime is absent
still checks integrity.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge_export.build.exporter import target_names

from .conftest import DIGITS, ROOT
from .test_bad_inputs import Case, check_stderr
from .test_bundle import make_package

SOURCE = ("pyproject.toml", "README.md", "edge_export", "exporters", "recipes")
OPTIONAL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings (``name[extras]==1.0; marker`` → name)."""
    return {re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in requirements}


def _exporter_class(target: str) -> type:
    import importlib.metadata

    (ep,) = importlib.metadata.entry_points(group="edge_export.exporters", name=target)
    return ep.load()


@pytest.mark.parametrize("target", ["android", "ios", "tflite", "coreai"])
def test_each_exporter_declares_exactly_its_extra(target: str):
    toolchain = _exporter_class(target).toolchain
    assert toolchain.extra == target
    assert set(toolchain.distributions) == _names(OPTIONAL[target])
    assert toolchain.install_command == f'pip install "edge-export[{target}]"'


def test_all_installs_every_target_extra():
    (everything,) = OPTIONAL["all"]
    extras = set(re.fullmatch(r"edge-export\[(.*)\]", everything).group(1).split(","))
    assert extras == {_exporter_class(t).toolchain.extra for t in target_names()}


# --- a second environment with only [tflite] ------------------------------------------------

def _run(cmd: list[str | Path], **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def tflite_only(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with ``edge-export[tflite]`` installed from a copy of this tree
    (pip's cache makes it quick; torch==2.13.0 comes from the machine's wheel folder)."""
    base = tmp_path_factory.mktemp("tflite-only")
    src = base / "src"
    src.mkdir()
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --no-compile: byte-compiling all of torch/jax/transformers would dominate the install
    proc = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", "-c",
                 ROOT / "constraints.txt", f"{src}[tflite]"], timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    present = _run([venv / "bin" / "python", "-c", "import importlib.util as u; print("
                    "[m for m in ('litert_torch', 'executorch', 'coremltools') if u.find_spec(m)])"])
    assert present.stdout.strip() == "['litert_torch']", present.stdout + present.stderr
    return venv / "bin"


def _cli(bin_dir: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return _run([bin_dir / "edge-export", *args], cwd=cwd, timeout=900)


@pytest.mark.slow
def test_recipes_show_the_missing_targets_as_not_installed(tflite_only, tmp_path):
    matrix = json.loads(_cli(tflite_only, "recipes", "--json", cwd=tmp_path).stdout)
    fp32 = matrix["fp32"]
    assert fp32["tflite"]["installed"] is True and fp32["tflite"]["install"] is None
    for target in ("android", "ios"):
        assert fp32[target]["installed"] is False
        assert fp32[target]["install"] == f'pip install "edge-export[{target}]"'
    table = _cli(tflite_only, "recipes", cwd=tmp_path).stdout
    # litert-torch brings torchao, so only the rest is missing
    assert 'ios: not installed: it needs coremltools, executorch (pip install "edge-export[ios]")' in table


@pytest.mark.slow
@pytest.mark.parametrize("target, missing", [("ios", "coremltools, executorch"),
                                             ("android", "executorch")])
def test_a_target_that_is_not_installed_is_refused_with_the_pip_command(tflite_only, tmp_path,
                                                                         target, missing):
    case = Case(target, lambda env: [], 2,
                (f"target {target} is not installed: it needs {missing}",
                 f'pip install "edge-export[{target}]"'))
    args = ("--model", DIGITS, "--target", "tflite", "--target", target, "--out", tmp_path / "out")
    plain = _cli(tflite_only, *args, cwd=tmp_path)
    assert plain.returncode == 2, plain.stderr
    check_stderr(plain.stderr, case)
    as_json = _cli(tflite_only, *args, "--json", cwd=tmp_path)
    assert as_json.returncode == 2
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and data["error"]["code"] == 2
    assert data["error"]["message"] == check_stderr(as_json.stderr, case).removeprefix("error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_target_all_builds_the_installed_target_and_says_what_it_skipped(tflite_only, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"  # a fresh cache: the first export is real
    proc = _cli(tflite_only, "--model", DIGITS, "--target", "all", "--out", out, "--jobs", "1",
                "--cache-dir", cache, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert [(p["target"], p["status"]) for p in data["packages"]] == [("tflite", "passed")]
    assert {s["target"]: s["install"] for s in data["skipped"]} == {
        "android": 'pip install "edge-export[android]"', "ios": 'pip install "edge-export[ios]"',
        "coreai": 'pip install "edge-export[coreai]"'}

    package = out / "digits-0.1.0" / "tflite-fp32"
    verified = _cli(tflite_only, "verify", package, cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "golden samples re-run on litert" in verified.stdout

    plain = _cli(tflite_only, "--model", DIGITS, "--target", "all", "--out", tmp_path / "again",
                 "--jobs", "1", "--cache-dir", cache, cwd=tmp_path)  # the human output, from cache
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert ('skipped ios (--target all): not installed: it needs coremltools, executorch '
            '(pip install "edge-export[ios]")') in plain.stderr


@pytest.mark.slow
def test_verify_without_the_runtime_checks_integrity_and_skips_the_golden_rerun(tflite_only, tmp_path):
    package = make_package(tmp_path / "pkgs", target="ios")
    refused = _cli(tflite_only, "verify", package, cwd=tmp_path)  # the hashes hold, but nothing ran it
    assert refused.returncode == 4, refused.stderr
    assert "files match, but the golden outputs were not re-run" in refused.stderr, refused.stderr
    proc = _cli(tflite_only, "verify", package, "--allow-unverified", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: digits 0.1.0 ios/fp32:") and "files match" in proc.stdout
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warning == ['warning: golden outputs not re-run: golden re-run skipped: target ios is not '
                       'installed: it needs coremltools, executorch '
                       '(hint: pip install "edge-export[ios]")'], proc.stderr

    (package / "labels.txt").write_text("tampered\n")  # the hashes are still checked
    tampered = _cli(tflite_only, "verify", package, "--allow-unverified", cwd=tmp_path)
    assert tampered.returncode == 1 and "labels.txt" in tampered.stderr, tampered.stderr


@pytest.mark.slow
def test_a_release_of_all_targets_refuses_when_one_is_not_installed(tflite_only, tmp_path):
    """A release is all or nothing: ``targets = ["all"]`` must not quietly mean "what is installed"."""
    config = tmp_path / "release.toml"
    config.write_text(f'version = "1.0.0"\n\n[[models]]\nname = "digits"\nmodel = "{DIGITS}"\n'
                      'targets = ["all"]\n')
    proc = _cli(tflite_only, "release", config, "--out", tmp_path / "rel", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "targets 'all' includes android, which is not installed: it needs executorch" in proc.stderr
    assert 'pip install "edge-export[android]"' in proc.stderr
    assert not (tmp_path / "rel").exists()
