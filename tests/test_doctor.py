"""``edge-export doctor``: each registered target's toolchain, install command and runtime, on
this host's real toolchains, and on plugin targets registered through entry-point metadata."""

from __future__ import annotations

import importlib.metadata
import json
import os
import textwrap
from pathlib import Path

import pytest

from .conftest import run_cli

# The runtime parity uses on Linux for each built-in target (README's target table).
LINUX_RUNTIMES = {"android": "executorch", "ios": "mil-reference", "tflite": "litert", "coreai": "coreai"}
EXTRAS = {"android": ("executorch", "torchao"), "ios": ("coremltools", "executorch", "torchao"),
          "tflite": ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"),
          "coreai": ("coreai-torch", "coreai-core", "coreai-opt")}

PLUGIN = '''
from edge_export.build.exporter import Exporter, SchemeTable, Toolchain


class _Plugin(Exporter):
    artifact_name = "model.bin"
    format = "test"
    runtime_name = "test-runtime"
    schemes = SchemeTable()

    def lower(self, prepared, recipe, dest):
        raise NotImplementedError

    def load_runtime(self, artifact, threads=1):
        raise NotImplementedError

    def tool_versions(self):
        return {}

    def runtime_requirements(self, recipe):
        return {}


class Broken(_Plugin):
    """Installed (it needs nothing beyond the core), but its native runtime does not load."""
    target = "broken"

    def check_runtime(self):
        raise OSError("libbroken_runtime.so: cannot open shared object file")


class Absent(_Plugin):
    """Its toolchain distribution is not installed."""
    target = "absent"
    toolchain = Toolchain("absent", ("edge-export-absent-toolchain",), project="edge-export-absent")
'''


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, str]:
    """Two third-party targets, registered as a pip install would: a module and a dist-info."""
    (tmp_path / "doctor_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "doctor_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: doctor-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edge_export.exporters]\nbroken = doctor_plugin:Broken\n"
                                           "absent = doctor_plugin:Absent\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}


def test_every_builtin_target_is_listed_usable_with_its_versions_and_runtime():
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("edge-export ") and f"torch {importlib.metadata.version('torch')}" in lines[0]
    assert len(lines) == 1 + len(LINUX_RUNTIMES), proc.stdout
    for line, target in zip(lines[1:], LINUX_RUNTIMES, strict=True):
        versions = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in EXTRAS[target])
        assert line == f"✅ {target:8} {versions}; runtime {LINUX_RUNTIMES[target]} loads"


def test_targets_registered_later_are_asked_too_and_a_broken_runtime_fails_the_check(plugins, capsys):
    proc = run_cli("doctor", "--json", env=plugins)
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)  # exactly one object, even with a failing target
    assert report["ok"] is False and report["error"]["code"] == 3
    assert report["error"]["message"] == "the runtime of installed target(s) broken does not load on this host"
    assert proc.stderr.strip().splitlines()[-1] == f"error: {report['error']['message']}"
    cells = {c["target"]: c for c in report["targets"]}
    assert list(cells) == ["android", "ios", "tflite", "coreai", "absent", "broken"]
    for target in LINUX_RUNTIMES:  # the built-ins are still usable
        assert cells[target] == {
            "target": target, "installed": True, "usable": True, "missing": [],
            "versions": {d: importlib.metadata.version(d) for d in EXTRAS[target]},
            "install": f'pip install "edge-export[{target}]"',
            "runtime": {"name": LINUX_RUNTIMES[target], "loads": True, "error": None}}
    assert cells["absent"] == {
        "target": "absent", "installed": False, "usable": False, "missing": ["edge-export-absent-toolchain"],
        "versions": {"edge-export-absent-toolchain": None}, "install": 'pip install "edge-export-absent[absent]"',
        "runtime": {"name": None, "loads": None, "error": None}}
    broken = cells["broken"]
    assert broken["installed"] and not broken["usable"] and broken["versions"] == {}
    assert broken["runtime"]["loads"] is False and "libbroken_runtime.so" in broken["runtime"]["error"]

    from edge_export.cli.doctor import _print

    _print(report)  # the human form of that same report
    lines = capsys.readouterr().out.splitlines()
    assert ('❌ absent   edge-export-absent-toolchain missing; not installed: it needs '
            'edge-export-absent-toolchain (pip install "edge-export-absent[absent]")') in lines
    (line,) = [x for x in lines if x.startswith("❌ broken ")]
    assert line.startswith("❌ broken   core install; runtime does not load: ") and "libbroken_runtime.so" in line
