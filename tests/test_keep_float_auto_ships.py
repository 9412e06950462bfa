"""keep_float = "auto" ships the artifact it measured, and chooses on other samples than it reports.

The digits CNN (4 weighted layers) on tflite, with a copy of the shipped int8-static recipe
whose ``[goal]`` no artifact can meet (SNR >= 1000 dB; parity caps SNR at 200) while its
``[parity]`` gate is the shipped one: auto lowers the recipe as is (every layer int8: passes
the gate), then every layer kept float, which a fault (edge_export.faultpoints) overwrites
with a file that is no model, so LiteRT refuses it for real. The choice is then the earlier,
all-int8 candidate, and that must be the file published, with its own figures.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_export.faultpoints import CORRUPT_AUTO_CANDIDATE, FAULT_ENV

from .conftest import DIGITS, EXAMPLES, ROOT, export_json
from .test_keep_float_auto import MODEL as SENSITIVE

CALIB = EXAMPLES / "data" / "digits_calib.npz"  # 256 samples; int8-static calibrates on the first 64
VAL = EXAMPLES / "data" / "digits_val.npz"
# The digits CNN's weights as LiteRT stores them (OHWI convs, (out, in) fully connected).
WEIGHT_SHAPES = {(16, 3, 3, 1), (32, 3, 3, 16), (64, 512), (10, 64)}


def unreachable_goal_recipe(folder: Path, target: str = "tflite") -> Path:
    text = (ROOT / "recipes" / target / "int8-static.toml").read_text()
    assert 'keep_float = "auto"' in text and "\n[goal]\n" in text
    text = text.replace('name = "int8-static"', 'name = "int8-static-far-goal"')
    text = text[:text.index("\n[goal]\n")] + "\n[goal]\nsnr_db = 1000.0\n"
    path = folder / f"{target}-far-goal.toml"
    path.write_text(text)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    ref, act = reference.astype(np.float64), actual.astype(np.float64)
    return float(10 * np.log10(np.sum(ref * ref) / np.sum((act - ref) ** 2)))


def run_tflite(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Each of ``inputs`` (1x1x8x8 samples) through LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], x.astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(outputs)


def float_digits(inputs: np.ndarray) -> np.ndarray:
    import torch

    sys.path.insert(0, str(EXAMPLES))
    from digits import build

    model, _ = build()
    with torch.no_grad():
        return np.stack([model(torch.from_numpy(x))[0].numpy() for x in inputs])


@pytest.fixture(scope="module")
def far_goal(tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("far_goal")
    _proc, data = export_json("--model", DIGITS, "--target", "tflite", "--target", "ios", "--recipe", "fp32",
                              "--recipe", str(unreachable_goal_recipe(tmp)), "--calibration-data", str(CALIB),
                              "--validation-data", str(VAL), "--out", str(tmp / "dist"), "--no-cache",
                              "--jobs", "1", env={FAULT_ENV: f"{CORRUPT_AUTO_CANDIDATE}:2"})
    return data, tmp


def package(data: dict, target: str, recipe: str) -> tuple[dict, dict, dict]:
    (pkg,) = [p for p in data["packages"] if (p["target"], p["recipe"]) == (target, recipe)]
    assert pkg.get("path"), f"{target}/{recipe} left no package: {pkg.get('error') or pkg['parity']}"
    folder = Path(pkg["path"])
    return (pkg, json.loads((folder / "parity.json").read_text())["parity"],
            json.loads((folder / "manifest.json").read_text()))


@pytest.mark.slow
def test_auto_publishes_the_chosen_candidate_when_the_last_one_fails(far_goal):
    data, _tmp = far_goal
    pkg, parity, manifest = package(data, "tflite", "int8-static-far-goal")
    assert pkg["status"] == "passed", parity["reason"]
    auto = parity["layers"]["keep_float"]
    lowered = [a for a in auto["attempts"] if "artifact_sha256" in a]
    assert [a["passed"] for a in lowered] == [True, False], auto["attempts"]
    assert lowered[0]["kept"] == 0 and lowered[-1]["kept"] == auto["of_layers"] == 4
    assert auto["goal_met"] is False
    assert auto["chosen"] == [], "the candidate that passed kept nothing float"

    published = Path(pkg["path"]) / manifest["artifact"]["path"]
    assert sha256_of(published) == parity["artifact"]["sha256"] == manifest["artifact"]["sha256"]
    assert parity["artifact"]["sha256"] == lowered[0]["artifact_sha256"] != lowered[-1]["artifact_sha256"]
    # Independently of the record: the published file quantized every layer, as `chosen` says
    # (the all-float candidate would carry float32 weights).
    from ai_edge_litert.interpreter import Interpreter

    dtypes = {np.dtype(t["dtype"]).name for t in Interpreter(model_path=str(published)).get_tensor_details()
              if tuple(t["shape"]) in WEIGHT_SHAPES}
    assert dtypes == {"int8"}, dtypes


@pytest.mark.slow
def test_auto_chooses_on_calibration_samples_and_reports_on_the_parity_samples(far_goal):
    """The selection figures are the chosen file's on calibration samples 64-127 (past the 64
    the recipe calibrates on), the reported ones on the parity samples (the example input and
    digits_val's first 8): both recomputed here from the published file."""
    data, _tmp = far_goal
    pkg, parity, manifest = package(data, "tflite", "int8-static-far-goal")
    published = Path(pkg["path"]) / manifest["artifact"]["path"]
    selection = parity["layers"]["keep_float"]["selection"]
    assert {k: selection[k] for k in ("from", "samples", "overlaps_calibration")} == {
        "from": "calibration-data", "samples": 64, "overlaps_calibration": False}
    with np.load(CALIB) as npz:
        chosen_on = npz["x"][64:128, None].astype(np.float32)
    assert selection["snr_db"] == pytest.approx(snr_db(float_digits(chosen_on), run_tflite(published, chosen_on)),
                                                abs=0.02)

    (name,) = {n for s in manifest["golden"]["samples"] for n in s["inputs"]}
    reported_on = np.stack([np.fromfile(Path(pkg["path"]) / s["inputs"][name], "<f4").reshape(1, 1, 8, 8)
                            for s in manifest["golden"]["samples"]])
    assert parity["samples"] == len(reported_on) == 9
    with np.load(VAL) as npz:
        assert not any((npz["x"][:8] == x[0]).all() for x in chosen_on), "the two splits share no sample"
    (metrics,) = parity["outputs"].values()
    assert metrics["snr_db"] == pytest.approx(snr_db(float_digits(reported_on), run_tflite(published, reported_on)),
                                              abs=0.02)


@pytest.mark.slow
def test_every_package_records_the_sha256_of_the_artifact_it_measured(far_goal):
    """Not only auto: a plain fp32 .tflite (a file) and .mlpackage (a directory, hashed as the
    manifest hashes it: sorted relative paths with each file's sha256)."""
    data, _tmp = far_goal
    for target in ("tflite", "ios"):
        pkg, parity, manifest = package(data, target, "fp32")
        artifact = Path(pkg["path"]) / manifest["artifact"]["path"]
        if artifact.is_dir():
            listing = "".join(f"{p.relative_to(artifact).as_posix()}\0{sha256_of(p)}\n"
                              for p in sorted(q for q in artifact.rglob("*") if q.is_file()))
            expected = hashlib.sha256(listing.encode()).hexdigest()
        else:
            expected = sha256_of(artifact)
        assert parity["artifact"]["sha256"] == manifest["artifact"]["sha256"] == expected, target
        assert parity["samples"] == 9


@pytest.mark.slow
def test_without_calibration_data_auto_chooses_on_random_inputs(tmp_path):
    """int8-weight needs no calibration data: the choice is made on random inputs of another
    seed than the random parity inputs, and parity.json says so."""
    text = (ROOT / "recipes" / "tflite" / "int8-weight.toml").read_text()
    text = re.sub(r'^name = ".*"$', 'name = "int8-weight-auto"', text, count=1, flags=re.M)
    assert "keep_float" not in text
    text = text.replace("[quantize]\n", '[quantize]\nkeep_float = "auto"\n', 1)
    recipe = tmp_path / "auto.toml"
    recipe.write_text(text)
    _proc, data = export_json("--model", SENSITIVE, "--target", "tflite", "--recipe", str(recipe),
                              "--parity-samples", "6", "--out", str(tmp_path / "dist"), "--no-cache", "--jobs", "1")
    pkg, parity, _manifest = package(data, "tflite", "int8-weight-auto")
    selection = parity["layers"]["keep_float"]["selection"]
    assert {k: selection[k] for k in ("from", "samples", "overlaps_calibration")} == {
        "from": "random", "samples": 6, "overlaps_calibration": False}
    assert parity["inputs"] == "random" and parity["samples"] == 7


@pytest.mark.slow
def test_when_no_candidate_meets_the_goal_the_smallest_passing_one_ships(tmp_path: Path) -> None:
    """The same unreachable goal without the fault: both candidates (nothing kept, every layer
    kept) pass the gate and neither meets the goal; the extra float layers bought nothing asked
    for, so the all-int8 candidate ships, not a float-sized one."""
    _proc, data = export_json("--model", DIGITS, "--target", "tflite",
                              "--recipe", str(unreachable_goal_recipe(tmp_path)), "--calibration-data", str(CALIB),
                              "--validation-data", str(VAL), "--out", str(tmp_path / "dist"), "--no-cache",
                              "--jobs", "1")
    pkg, parity, manifest = package(data, "tflite", "int8-static-far-goal")
    auto = parity["layers"]["keep_float"]
    lowered = [a for a in auto["attempts"] if "artifact_sha256" in a]
    assert [a["passed"] for a in lowered] == [True, True], auto["attempts"]
    assert auto["goal_met"] is False and auto["chosen"] == []
    assert parity["artifact"]["sha256"] == lowered[0]["artifact_sha256"] == manifest["artifact"]["sha256"]


@pytest.mark.slow
def test_the_recipe_as_it_is_competes_when_its_reference_screened_it_out(tmp_path: Path) -> None:
    """android's PT2E reference screens each candidate against the goal before lowering, so with an
    unreachable goal only the every-layer-float candidate was lowered, and it shipped: a
    float-sized "int8" package. The recipe as it is is lowered too, passes the gate and ships."""
    _proc, data = export_json("--model", DIGITS, "--target", "android",
                              "--recipe", str(unreachable_goal_recipe(tmp_path, "android")),
                              "--calibration-data", str(CALIB), "--validation-data", str(VAL),
                              "--out", str(tmp_path / "dist"), "--no-cache", "--jobs", "1")
    pkg, parity, manifest = package(data, "android", "int8-static-far-goal")
    auto = parity["layers"]["keep_float"]
    assert auto["goal_met"] is False and auto["chosen"] == [], auto["attempts"]
    lowered = {a["kept"]: a for a in auto["attempts"] if "artifact_sha256" in a}
    assert lowered[0]["passed"] and parity["artifact"]["sha256"] == lowered[0]["artifact_sha256"]
    assert manifest["artifact"]["sha256"] == lowered[0]["artifact_sha256"]
