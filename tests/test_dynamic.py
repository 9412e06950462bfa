"""Dynamic dimensions the user declares (``--dynamic NAME:DIM=MIN..MAX``): recorded in the
manifest, parity-checked at several sizes, and really variable in the artifact; refused in one
line by a target that cannot take them and for a model that fixes the size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from . import handed_over
from .conftest import ROOT, export_json, run_cli

pytestmark = pytest.mark.slow
MODELS = ROOT / "tests" / "handed_over.py"
SEQUENCE = ("--dynamic", "input_ids:1=1..32", "--dynamic", "attention_mask:1=1..32")


def test_a_dynamic_sequence_length_exports_and_is_checked_at_several_sizes(tmp_path):
    proc, data = export_json("--model", f"{MODELS}:bert_encoder", "--target", "android", "--target", "ios",
                             "--out", str(tmp_path), "--no-cache", "--jobs", "2", *SEQUENCE)
    assert proc.returncode == 0, data
    for pkg in data["packages"]:
        folder = Path(pkg["path"])
        manifest = json.loads((folder / "manifest.json").read_text())
        for spec in manifest["inputs"]:
            assert spec["dynamic_dims"] == [{"dim": 1, "min": 1, "max": 32}]
            assert spec["shape"] == [1, 12]  # the example size
        sizes = json.loads((folder / "parity.json").read_text())["parity"]["dynamic_sizes"]
        assert [s["inputs"] for s in sizes] == [f"input_ids 1x{n}, attention_mask 1x{n}" for n in (1, 16, 32)]
        assert all(s["status"] == "passed" for s in sizes)
        assert min(m["cosine"] for s in sizes for m in s["outputs"].values()) > 0.9999

    # A size parity did not check, against the user's model run here.
    from executorch.runtime import Runtime

    model, tokens = handed_over.bert_encoder()
    ids = tokens["input_ids"].repeat(1, 2)[:, :20]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    android = next(Path(p["path"]) for p in data["packages"] if p["target"] == "android")
    method = Runtime.get().load_program(str(android / "model.pte")).load_method("forward")
    got = method.execute([ids, mask])[0].numpy()
    assert got.shape == (1, 20, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_target_that_cannot_take_dynamic_dims_refuses_in_one_line(tmp_path):
    proc = run_cli("--model", f"{MODELS}:bert_encoder", "--target", "tflite", "--out", str(tmp_path),
                   "--no-cache", *SEQUENCE)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "target tflite cannot take --dynamic" in lines[0], proc.stderr
    assert "android, ios" in lines[0]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(("extra", "phrase"), [
    (("--dynamic", "x:1=1..32"), "the model does not take the declared dynamic sizes (x dimension 1)"),
    (("--dynamic", "x:1=13..32"), "outside the range"),
    (("--dynamic", "y:1=1..32"), "does not have"),
    (("--dynamic", "x:1=8"), "malformed --dynamic"),
])
def test_dynamic_dims_the_model_cannot_take_are_usage_errors(extra, phrase, tmp_path):
    proc = run_cli("--model", f"{MODELS}:fixed_length", "--target", "android", "--out", str(tmp_path),
                   "--no-cache", *extra)
    assert proc.returncode == 2, proc.stderr
    assert phrase in proc.stderr
    assert "Traceback" not in proc.stderr
