"""Every cache key covers what its result depends on: the job cache's key (``cache.job_key``)
the model's output kinds, labels, preprocessing and the rest of its metadata, and both the job
cache's key and a release's reuse fingerprint (``jobs.fingerprint_inputs``) edge-export's own
code. Each input is changed alone and must give another key."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from edge_export.build import cache
from edge_export.build.exporter import get_exporter
from edge_export.build.job import Job, ModelInfo
from edge_export.load.tensors import DynamicDim, TensorSpec
from edge_export.quant.recipe import builtin_recipes
from edge_export.release import jobs as release_jobs
from tests.conftest import EXAMPLES, export_json

MODEL = ModelInfo(spec="m.py:build", name="m", version="0.1.0",
                  inputs=(TensorSpec("x", (1, 1, 8, 8)),), output_names=("scores",), labels=None,
                  preprocessing={}, weights_sha256="w" * 64, graph_sha256="g" * 64,
                  output_kinds=("tensor",))
INPUTS_SHA256 = {"graph": "g" * 64, "parity": "p" * 64}


def _key(model: ModelInfo = MODEL) -> str:
    job = Job(target="tflite", recipe=builtin_recipes("tflite")["fp32"], model=model,
              workspace=Path("/nonexistent"), staging=Path("/nonexistent"), parity_inputs_from="validation-data")
    return cache.job_key(job, get_exporter("tflite"), INPUTS_SHA256)


@pytest.mark.parametrize("change", [
    {"output_kinds": ("class-logits",)},  # what decides the top-1 gate
    {"labels": tuple(str(i) for i in range(10))},
    {"preprocessing": {"mean": [0.5], "std": [0.25]}},
    {"compression": {"sparsity": 0.5}},
    {"output_names": ("logits",)},
    {"inputs": (TensorSpec("x", (1, 1, 8, 8), dynamic=(DynamicDim(0, 1, 4),)),)},
    {"weights_sha256": "v" * 64},
], ids=lambda change: next(iter(change)))
def test_job_key_changes_with_each_model_input(change: dict) -> None:
    assert _key(replace(MODEL, **change)) != _key()


def test_job_key_ignores_what_only_names_or_locates_the_package() -> None:
    """The documented exclusions (cache.MODEL_NOT_IN_KEY): the artifact and its results never
    contain them, so a new --version or another checkout still hits."""
    assert _key(replace(MODEL, spec="/elsewhere/m.py:build", name="other", version="2.0.0",
                        trust_pickle=True)) == _key()


def test_job_key_and_release_fingerprint_change_with_edge_exports_source(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    job = release_jobs.ReleaseJob(name="digits", version="1.0.0", model=f"{EXAMPLES / 'digits.py'}:build",
                                  target="tflite", recipe="fp32", recipe_name="fp32")
    before = _key(), json.dumps(release_jobs.fingerprint_inputs(job, "w" * 64, "s" * 64), sort_keys=True)
    monkeypatch.setattr(cache, "source_sha256", lambda: "another edge-export")  # an edited checkout
    after = _key(), json.dumps(release_jobs.fingerprint_inputs(job, "w" * 64, "s" * 64), sort_keys=True)
    assert before[0] != after[0]
    assert before[1] != after[1]
    monkeypatch.undo()
    monkeypatch.setattr(release_jobs, "__version__", "99.0")
    assert json.dumps(release_jobs.fingerprint_inputs(job, "w" * 64, "s" * 64), sort_keys=True) != before[1]


CLASSIFIER = """\
import sys
sys.path.insert(0, {examples!r})
import digits

METADATA = {{"name": "scorer", "output_names": ["scores"]{kinds}}}


def build():
    model, example = digits.build()
    model.edge_export_metadata = METADATA
    return model, example
"""


@pytest.mark.slow
def test_marking_an_output_class_logits_is_not_served_from_the_cache(tmp_path: Path) -> None:
    """The issue's case: a classifier exported once with a plain ``scores`` output, then marked
    ``class-logits``; the re-run must gate top-1 (32 real samples), not reuse the first gates."""
    spec = tmp_path / "scorer.py"
    args = ["--model", f"{spec}:build", "--target", "tflite", "--cache-dir", str(tmp_path / "cache"),
            "--validation-data", str(EXAMPLES / "data" / "digits_val.npz"), "--parity-samples", "32", "--force"]

    def export(kinds: str, out: str) -> dict:
        spec.write_text(CLASSIFIER.format(examples=str(EXAMPLES), kinds=kinds))
        proc, data = export_json(*args, "--out", str(tmp_path / out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        package, = data["packages"]
        return {"timings": package["timings"],
                "top1_gate": json.loads((Path(package["path"]) / "parity.json").read_text())["parity"]["top1_gate"]}

    plain = export("", "plain")
    assert plain["top1_gate"].startswith("no class output") and "cached" not in plain["timings"]
    again = export("", "again")  # the cache is in use: an identical run is served from it
    assert "cached" in again["timings"]
    marked = export(', "output_kinds": {"scores": "class-logits"}', "marked")
    assert "cached" not in marked["timings"], "the re-run was served from the cache"
    assert marked["top1_gate"].startswith("gated"), marked["top1_gate"]
