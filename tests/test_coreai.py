"""The coreai target: Core AI ``.aimodel`` packages run on Apple's own runtime
(``coreai.runtime``, which coreai-core ships for Linux x86-64), never on an executor of ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edge_export.cli.main import cli
from edge_export.quant.recipe import builtin_recipes

from .conftest import DIGITS, EXAMPLES, export_json, run_cli

pytest.importorskip("coreai_torch")
pytest.importorskip("coreai.runtime")

DATA = EXAMPLES / "data"
MLP = f"{EXAMPLES / 'mlp.py'}:build"


def _lower(model: nn.Module, example: tuple[torch.Tensor, ...], recipe: str, dest: Path,
           names: tuple[str, ...] = ("x",)) -> Path:
    from edge_export.build.exporter import Prepared
    from exporters.coreai import CoreAIExporter

    prepared = Prepared(torch.export.export(model, example), example_inputs=example,
                        input_names=names, output_names=("y",))
    artifact = dest / f"{recipe}.aimodel"
    CoreAIExporter().lower(prepared, builtin_recipes("coreai")[recipe], artifact)
    return artifact


def _run(artifact: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    from exporters.coreai import CoreAIExporter

    runtime, run = CoreAIExporter().load_runtime(artifact)
    assert runtime == "coreai"
    return run(list(inputs))


@pytest.fixture(scope="module")
def digits_coreai(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits-coreai")
    proc, data = export_json("--model", DIGITS, "--target", "coreai", "--out", str(out), "--no-cache",
                             "--validation-data", str(DATA / "digits_val.npz"))
    return proc, data


@pytest.mark.slow
def test_digits_fp32_passes_parity_on_the_coreai_runtime(digits_coreai):
    proc, data = digits_coreai
    assert proc.returncode == 0, proc.stderr[-3000:]
    (pkg,) = data["packages"]
    assert (pkg["target"], pkg["recipe"], pkg["status"]) == ("coreai", "fp32", "passed")
    assert pkg["parity"]["runtime"] == "coreai"
    assert Path(pkg["artifact"]).name == "model.aimodel"
    assert (Path(pkg["artifact"]) / "main.mlirb").is_file()
    for metrics in pkg["parity"]["outputs"].values():
        assert metrics["snr_db"] >= 60 and metrics["cosine"] >= 0.9999
    manifest = json.loads((Path(pkg["path"]) / "manifest.json").read_text())
    assert manifest["runtime"]["runtime"] == "coreai"
    assert manifest["inputs"][0]["name"] == "x" and manifest["outputs"][0]["name"] == "logits"


@pytest.mark.slow
def test_verify_reruns_the_golden_samples_on_coreai(digits_coreai):
    _, data = digits_coreai
    proc = run_cli("verify", data["packages"][0]["path"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "re-run on coreai" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_exports_write_the_same_bytes(digits_coreai, tmp_path):
    """Core AI names weight blobs by a hash seeded per process; lower() renames them."""
    _, first = digits_coreai
    proc, second = export_json("--model", DIGITS, "--target", "coreai", "--out", str(tmp_path), "--no-cache",
                               "--validation-data", str(DATA / "digits_val.npz"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert second["packages"][0]["sha256"] == first["packages"][0]["sha256"]


@pytest.mark.slow
def test_weight_recipes_shrink_the_mlp(tmp_path):
    """The 2.1 M-parameter MLP: 8-bit at most 0.30x fp32, 4-bit at most 0.20x."""
    recipes = ("fp32", "int8-weight", "int4-weight", "palettize4")
    proc, data = export_json("--model", MLP, "--target", "coreai", "--out", str(tmp_path),
                             "--parity-samples", "1", *(a for r in recipes for a in ("--recipe", r)), timeout=900)
    # Random weights give near-tied logits: a top-1 gate may fail (exit 1), every artifact is built.
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    sizes = {p["recipe"]: p["bytes"] for p in data["packages"]}
    assert set(sizes) == set(recipes)
    for name in recipes[1:]:
        limit = 0.30 if builtin_recipes("coreai")[name].param("bits") == 8 else 0.20
        assert sizes[name] / sizes["fp32"] <= limit, (name, sizes[name] / sizes["fp32"])
    for pkg in data["packages"]:
        assert pkg["parity"]["runtime"] == "coreai"
        assert pkg["parity"]["outputs"]["logits"]["cosine"] >= builtin_recipes("coreai")[pkg["recipe"]].parity.cosine


class Lookup(nn.Module):
    """Row i of the table is (i // 64, i % 64): small integers, exact in fp16."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5000, 2)
        ids = torch.arange(5000)
        with torch.no_grad():
            self.table.weight.copy_(torch.stack([ids // 64, ids % 64], dim=1).float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["fp32", "fp16"])
def test_int64_token_ids_arrive_as_int32(recipe, tmp_path):
    """Core AI has no int64 tensors: the program declares int32 and the runner casts at the
    boundary (the runtime itself rejects an int64 array). Ids above 2048 stay exact in fp16."""
    ids = torch.tensor([[4097, 4099, 4999, 7, 2049]])
    artifact = _lower(Lookup().eval(), (ids,), recipe, tmp_path, names=("ids",))
    (rows,) = _run(artifact, ids.numpy())
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0, :, 0] * 64 + rows[0, :, 1], [4097, 4099, 4999, 7, 2049])
    with pytest.raises(ValueError, match="outside int32"):
        _run(artifact, np.array([[2**40, 1, 2, 3, 4]]))


class Windows(nn.Module):
    """Overlapping windows by ``as_strided``, as ConvNeXt-style code and sliding windows write
    them; ``transposed`` reads a non-contiguous input, whose storage order is not its logical one."""

    def __init__(self, transposed: bool) -> None:
        super().__init__()
        self.transposed = transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            x = x.transpose(0, 1)
        return torch.as_strided(x, (3, 4, 2), (2, 1, 3), 1) * 2.0


@pytest.mark.slow
@pytest.mark.parametrize("transposed", [False, True])
def test_as_strided_is_decomposed_and_runs(transposed, tmp_path):
    x = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    model = Windows(transposed).eval()
    (got,) = _run(_lower(model, (x,), "fp32", tmp_path), x.numpy())
    np.testing.assert_array_equal(got, model(x).numpy())


def test_preflight_names_the_ops_coreai_torch_cannot_lower():
    from exporters.coreai import CoreAIExporter

    class Unlowerable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.argmin(nn.functional.elu(x), dim=1) + torch.as_strided(x, (1,), (1,)).long()

    program = torch.export.export(Unlowerable(), (torch.randn(1, 4),))
    assert CoreAIExporter().preflight(program)["not_converted"] == ["argmin", "elu"]


@pytest.mark.parametrize("name", [n for n, r in builtin_recipes("coreai").items() if not r.supported])
def test_unsupported_cells_are_refused_with_reason(name):
    result = CliRunner().invoke(cli, ["--model", DIGITS, "--target", "coreai", "--recipe", name])
    assert result.exit_code == 2
    assert f"recipe {name!r} is not supported on coreai" in result.output
    assert builtin_recipes("coreai")[name].unsupported.split(";")[0][:40] in " ".join(result.output.split())


@pytest.mark.slow
def test_a_pt2e_model_ships_its_own_int8_graph(tmp_path):
    """convert_pt2e's quantize/dequantize ops become Core AI's: the package is recipe
    ``prequantized``, int8-sized, and computes what the user's quantized module computes."""
    proc, data = export_json("--model", f"{Path(__file__).parent / 'handed_over.py'}:pt2e", "--target", "coreai",
                             "--out", str(tmp_path), "--no-cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (pkg,) = data["packages"]
    assert (pkg["recipe"], pkg["status"], pkg["parity"]["runtime"]) == ("prequantized", "passed", "coreai")
    assert pkg["parity"]["outputs"]["output"]["snr_db"] >= 60  # the same int8 arithmetic as PyTorch's
    params = 768 * 256 + 256 * 10  # the MLP's weights: int8 is about one byte each
    assert pkg["bytes"] < 0.4 * 4 * params, "the .aimodel holds int8 weights, not fp32"


@pytest.mark.slow
def test_a_dynamic_sequence_length_is_checked_at_several_sizes(tmp_path):
    """Core AI takes symbolic sizes (the function declares -1): parity runs at min, middle, max."""
    proc, data = export_json("--model", f"{Path(__file__).parent / 'handed_over.py'}:bert_encoder",
                             "--target", "coreai", "--out", str(tmp_path), "--no-cache",
                             "--dynamic", "input_ids:1=1..32", "--dynamic", "attention_mask:1=1..32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (pkg,) = data["packages"]
    parity = json.loads((Path(pkg["path"]) / "parity.json").read_text())["parity"]
    sizes = parity["dynamic_sizes"]
    assert [s["inputs"] for s in sizes] == [f"input_ids 1x{n}, attention_mask 1x{n}" for n in (1, 16, 32)]
    assert all(s["status"] == "passed" for s in sizes)
    assert min(m["cosine"] for s in sizes for m in s["outputs"].values()) > 0.9999
