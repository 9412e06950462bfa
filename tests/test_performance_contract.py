"""The performance contract: lazy imports, parallel = sequential output, a sound cache.

Timing goals are measured by ``make bench``, never asserted here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_export.build.cache import Cache, arrays_sha256, job_key
from edge_export.build.exporter import get_exporter
from edge_export.build.job import Job, ModelInfo
from edge_export.load.tensors import TensorSpec
from edge_export.quant.recipe import builtin_recipes, parse_recipe
from tests.conftest import DIGITS, export_json

HEAVY = ("torch", "executorch", "coremltools", "litert_torch")


def _imported_after(args: list[str]) -> list[str]:
    code = ("import sys\nfrom edge_export.cli.main import cli\n"
            f"try:\n    cli.main({args!r})\nexcept SystemExit:\n    pass\n"
            f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stderr.strip().splitlines()[-1].removeprefix("loaded:").split(",") if m]


@pytest.mark.parametrize("args", [
    ["--help"],
    ["recipes"],
    ["--model", "examples/digits.py:build", "--target", "nosuchtarget", "--out", "/tmp/x"],
    ["--model", "examples/digits.py:build", "--target", "android", "--recipe", "nosuch"],
    ["--model", "examples/digits.py:build", "--target", "android", "--jobs", "0"],
])
def test_help_recipes_and_usage_errors_import_no_toolchain(args: list[str]) -> None:
    assert _imported_after(args) == []


# --- cache key: every component changes it, nothing else does -------------------------

def _job(**changes) -> Job:
    model = ModelInfo(spec="m.py:build", name="m", version="0.1.0",
                      inputs=(TensorSpec("x", (1, 4), "float32"),), output_names=("y",),
                      labels=None, preprocessing={}, weights_sha256="a" * 64)
    job = Job(target="tflite", recipe=builtin_recipes("tflite")["fp32"], model=model,
              workspace=Path("/w"), staging=Path("/s"), parity_inputs_from="random")
    return dataclasses.replace(job, **changes)


DATA = {"graph": "g" * 64, "parity": "p" * 64}


def _key(job: Job | None = None, data: dict | None = None, exporter=None) -> str:
    job = job or _job()
    return job_key(job, exporter or get_exporter(job.target), data or DATA)


def test_cache_key_is_stable_and_ignores_name_version_and_paths() -> None:
    other = _job(model=dataclasses.replace(_job().model, name="n", version="9.9.9", spec="x.py:f"),
                 workspace=Path("/elsewhere"), staging=Path("/t"))
    assert _key() == _key(other)


def test_cache_key_changes_with_each_component() -> None:
    base = _key()
    model = _job().model
    recipe = builtin_recipes("tflite")["fp32"]
    text = (Path(__file__).parent.parent / "recipes" / "tflite" / "fp32.toml").read_text()
    edited = parse_recipe(text + "\n# a comment changes the file's sha256\n", "edited")

    class NewerTool(type(get_exporter("tflite"))):
        def tool_versions(self) -> dict[str, str]:
            return {**super().tool_versions(), "litert-torch": "99.0"}

    variants = {
        "weights": _key(_job(model=dataclasses.replace(model, weights_sha256="b" * 64))),
        "graph": _key(data={**DATA, "graph": "h" * 64}),
        "parity data": _key(data={**DATA, "parity": "q" * 64}),
        "calibration data": _key(data={**DATA, "calibration": "c" * 64}),
        "input shape": _key(_job(model=dataclasses.replace(
            model, inputs=(TensorSpec("x", (2, 4), "float32"),)))),
        "output names": _key(_job(model=dataclasses.replace(model, output_names=("z",)))),
        "target": _key(_job(target="android", recipe=builtin_recipes("android")["fp32"])),
        "recipe file": _key(_job(recipe=edited)),
        "recipe params": _key(_job(recipe=dataclasses.replace(recipe, params={"bits": 8}))),
        "accuracy gate": _key(_job(max_accuracy_drop=0.5)),
        "parity inputs": _key(_job(parity_inputs_from="validation-data")),
        "tool versions": _key(exporter=NewerTool()),
        "latency threads": _key(_job(threads=2)),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_arrays_hash_covers_values_dtype_and_shape() -> None:
    a = {"in_0": np.zeros((2, 3), np.float32)}
    assert arrays_sha256(a) == arrays_sha256({"in_0": np.zeros((2, 3), np.float32)})
    assert arrays_sha256(a) != arrays_sha256({"in_0": np.zeros((3, 2), np.float32)})
    assert arrays_sha256(a) != arrays_sha256({"in_0": np.zeros((2, 3), np.float64)})
    assert arrays_sha256(a) != arrays_sha256({"in_0": np.ones((2, 3), np.float32)})


def test_damaged_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"artifact bytes")
    cache = Cache(tmp_path / "cache")
    cache.store("k" * 64, artifact, {"parity": {"status": "passed"}, "latency": None, "accuracy": None})
    hit = cache.lookup("k" * 64)
    assert hit is not None and hit.results["parity"] == {"status": "passed"}
    hit.artifact.write_bytes(b"artifact byteZ")  # same size, other content
    assert cache.lookup("k" * 64) is None
    assert not cache.contains("k" * 64)
    cache.store("k" * 64, artifact, {"parity": {"status": "passed"}, "latency": None, "accuracy": None})
    entry = json.loads((cache._entry("k" * 64) / "entry.json").read_text())
    entry["results"]["parity"]["status"] = "failed"  # results edited behind the cache's back
    (cache._entry("k" * 64) / "entry.json").write_text(json.dumps(entry))
    assert cache.lookup("k" * 64) is None


# --- end to end (real toolchains) -----------------------------------------------------

def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _export(out: Path, *args: str) -> dict:
    proc, data = export_json("--model", DIGITS, "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data


@pytest.mark.slow
def test_parallel_and_sequential_packages_are_byte_identical(tmp_path: Path) -> None:
    _export(tmp_path / "seq", "--target", "all", "--jobs", "1", "--no-cache")
    _export(tmp_path / "par", "--target", "all", "--jobs", "3", "--no-cache")
    seq, par = _files(tmp_path / "seq"), _files(tmp_path / "par")
    assert len(seq) > 30 and any(k.endswith(".zip") for k in seq)
    assert seq.keys() == par.keys()
    assert [k for k in seq if seq[k] != par[k]] == []


def _stages(data: dict) -> set[str]:
    (package,) = data["packages"]
    return set(package["timings"])


@pytest.mark.slow
def test_cache_hit_miss_and_corrupted_entry_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ("--target", "tflite", "--cache-dir", str(cache))
    cold = _export(tmp_path / "cold", *args)
    assert "lower" in _stages(cold)
    warm = _export(tmp_path / "warm", *args)
    assert _stages(warm) == {"cached", "package"}
    assert _files(tmp_path / "cold") == _files(tmp_path / "warm")

    other_data = _export(tmp_path / "data", *args, "--parity-samples", "3")
    assert "lower" in _stages(other_data)

    artifacts = list(cache.glob("entries/*/*/model.tflite"))
    assert len(artifacts) == 2
    for artifact in artifacts:  # flip one byte in the middle of each cached artifact
        blob = bytearray(artifact.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        artifact.write_bytes(bytes(blob))
    rebuilt = _export(tmp_path / "rebuilt", *args)
    assert "lower" in _stages(rebuilt)
    assert _files(tmp_path / "rebuilt") == _files(tmp_path / "cold")
    again = _export(tmp_path / "again", *args)
    assert _stages(again) == {"cached", "package"}

    bypass = _export(tmp_path / "bypass", "--target", "tflite", "--no-cache")
    assert "lower" in _stages(bypass)


@pytest.mark.slow
def test_xnnpack_pattern_anchors_are_in_every_pattern() -> None:
    """The pattern-pass shortcut in exporters/executorch/patterns.py is exact only if each
    anchor op occurs in every pattern graph of its pass (re-checked on toolchain upgrades)."""
    import importlib

    from edge_export.exporters.executorch.patterns import PATTERN_PASSES, has_op

    for _, _, module, builder, anchor, _ in PATTERN_PASSES:
        graphs = getattr(importlib.import_module(module), builder)()
        assert len(graphs) > 0
        assert all(has_op(g, anchor) for g in graphs), (module, anchor)
