"""``--task``: the outputs' kinds, the manifest's task and the apps' preprocessing for a model
without metadata; a task its outputs do not fit is refused; ``inspect`` guesses the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT, export_json, run_cli

MODELS = ROOT / "tests" / "task_models.py"
PLAIN = f"{MODELS}:plain_digits"
DENSE = f"{MODELS}:dense_map"


def test_task_whose_outputs_do_not_fit_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("export", "--model", DENSE, "--target", "tflite", "--out", str(tmp_path / "out"),
                   "--task", "image-classification", "--no-cache")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, proc.stderr
    assert "image-classification" in errors[0] and "'output'" in errors[0] and "rank 4" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_task_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("export", "--model", PLAIN, "--target", "tflite", "--out", str(tmp_path),
                   "--task", "image-clasification")
    assert proc.returncode == 2 and "image-clasification" in proc.stderr


def test_inspect_guesses_the_task_and_says_how_sure() -> None:
    proc, plain = export_json("inspect", PLAIN, "--target", "tflite")
    assert proc.returncode == 0, proc.stderr
    assert plain["task"]["name"] == "image-classification"
    assert (plain["task"]["source"], plain["task"]["confidence"]) == ("guess", "medium")
    proc, dense = export_json("inspect", DENSE, "--target", "tflite")
    assert dense["task"]["name"] == "semantic-segmentation"
    digits = run_cli("inspect", f"{EXAMPLES / 'digits.py'}:build", "--target", "tflite")
    assert digits.returncode == 0, digits.stderr
    # the digits model has labels, so its first output is already class logits
    assert "task: image-classification (guess, high:" in digits.stdout


def test_inspect_reads_a_token_classifier_as_text_classification_for_sure() -> None:
    proc, bert = export_json("inspect", f"{ROOT / 'tests' / 'handed_over.py'}:bert_classifier", "--target", "tflite")
    assert proc.returncode == 0, proc.stderr
    assert (bert["task"]["name"], bert["task"]["confidence"]) == ("text-classification", "high")


@pytest.mark.parametrize(("inputs", "outputs", "kinds", "expected"), [
    # wav2vec2-style CTC: one second of 16 kHz audio in, per-frame vocabulary logits out
    ([("input_values", (1, 16000), "float32")], [("logits", (1, 49, 32))], ("class-logits",),
     ("automatic-speech-recognition", "medium")),
    # a rank-3 output from tokens that nothing marks as scores is hidden states, not per-token classes
    ([("input_ids", (1, 12), "int64")], [("output", (1, 12, 32))], ("tensor",), ("feature-extraction", "low")),
    ([("input_ids", (1, 12), "int64")], [("logits", (1, 12, 9))], ("class-logits",),
     ("token-classification", "high")),
    # DETR: class logits per query and boxes per query
    ([("pixel_values", (1, 3, 64, 64), "float32")], [("logits", (1, 100, 92)), ("pred_boxes", (1, 100, 4))],
     ("class-logits", "tensor"), ("object-detection", "medium")),
    # a vector in, a vector out: too short for audio, nothing more specific fits
    ([("x", (1, 16), "float32")], [("output", (1, 4))], ("tensor",), ("feature-extraction", "low")),
])
def test_guess_from_shapes(inputs: list, outputs: list, kinds: tuple, expected: tuple) -> None:
    import numpy as np

    from edge_export.load.tasks import guess_task
    from edge_export.load.tensors import TensorSpec

    specs = [TensorSpec(n, shape, dtype) for n, shape, dtype in inputs]
    arrays = [(n, np.zeros(shape, np.float32)) for n, shape in outputs]
    assert guess_task(specs, arrays, kinds)[:2] == expected


@pytest.mark.slow
def test_task_sets_kinds_manifest_task_preprocessing_and_gates_top1(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, data = export_json("--model", PLAIN, "--target", "tflite", "--out", str(out), "--no-cache",
                             "--recipe", "fp16", "--task", "image-classification", "--parity-samples", "32",
                             "--validation-data", str(EXAMPLES / "data" / "digits_val.npz"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(next(out.rglob("manifest.json")).read_text())
    assert manifest["task"] == "image-classification"
    assert [o["kind"] for o in manifest["outputs"]] == ["class-logits"]
    assert "top1_agreement" in manifest["parity"]["thresholds"]
    pre = manifest["preprocessing"]
    assert pre["image_size"] == [8, 8] and pre["layout"] == "NCHW"
    assert pre["scale"] == pytest.approx(1 / 255)
    assert "app_vectors" in manifest


def test_the_task_is_in_the_job_cache_key() -> None:
    """Two builds that differ only in their task are two cache entries: the task decides the
    outputs' kinds and the manifest."""
    from dataclasses import replace

    from edge_export.build import cache
    from edge_export.build.exporter import get_exporter
    from edge_export.build.job import Job, ModelInfo
    from edge_export.load.tensors import TensorSpec
    from edge_export.quant.recipe import builtin_recipes

    model = ModelInfo(spec="m.py:build", name="m", version="0.1.0", inputs=(TensorSpec("x", (1, 1, 8, 8)),),
                      output_names=("output",), labels=None, preprocessing={}, weights_sha256="w" * 64,
                      graph_sha256="g" * 64, output_kinds=("class-logits",))

    def key(m: ModelInfo) -> str:
        job = Job(target="tflite", recipe=builtin_recipes("tflite")["fp32"], model=m, workspace=Path("/nonexistent"),
                  staging=Path("/nonexistent"), parity_inputs_from="validation-data")
        return cache.job_key(job, get_exporter("tflite"), {"graph": "g" * 64})

    assert key(replace(model, task="image-classification")) != key(model)


def test_a_kind_the_metadata_declares_wins_over_the_task() -> None:
    """The documented precedence: the model's own per-output kind, then the task's (a softmax
    output of a classifier staying probabilities), never the graph heuristic's plain tensor."""
    from edge_export.load.tasks import TASKS, task_kinds

    classifier = TASKS["image-classification"]
    assert task_kinds(classifier, ("tensor", "tensor"), {}, ["out", "aux"]) == ("class-logits", "tensor")
    assert task_kinds(classifier, ("class-probabilities",), {}, ["out"]) == ("class-probabilities",)
    assert task_kinds(classifier, ("tensor",), {"out": "tensor"}, ["out"]) == ("tensor",)
    assert task_kinds(TASKS["feature-extraction"], ("class-logits",), {}, ["logits"]) == ("tensor",)
