"""Outputs that hand a tensor on unchanged export on every target.

A pose/detection head returns nested outputs in which one tensor appears several times, as a
copy (``feats.clone()``) or as the graph input itself. XNNPACK drops the copy inside its
subgraph and then refuses the duplicated output ("Output node ... is already in the
inputs"); coremltools renames the input variable to the output's name and stops, or names a
twice-returned tensor once. The models below are also the ``--model`` specs of the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import export_json

HERE = Path(__file__).resolve()


class PoseHead(nn.Module):
    """Heatmaps plus the features they came from, handed on three times: as themselves, as a
    copy, and nested again; the input image is handed on as itself and as a copy."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.heat = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> dict:
        f = torch.relu(self.stem(x))
        feats = torch.cat([f, f * 0.5], 1)
        heat = self.heat(feats)
        return {"heatmaps": heat, "features": feats, "aux": [feats.clone(), (heat, x.clone(), feats)], "image": x}


def pose_head() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return PoseHead().eval(), (torch.randn(1, 3, 16, 16),)


def _exported(build) -> torch.export.ExportedProgram:
    from edge_export.load.adapt import FlatCall

    module, args = build()
    return torch.export.export(FlatCall(module), args)


def _outputs(program: torch.export.ExportedProgram) -> list:
    return list(program.graph_module.graph.output_node().args[0])


def test_android_returns_the_computed_tensor_for_its_copies() -> None:
    from edge_export.exporters.executorch.decompositions import collapse_output_copies

    program = collapse_output_copies(_exported(pose_head))
    outs = _outputs(program)
    assert outs[2] is outs[1] is outs[5]  # feats.clone() is feats
    assert outs[4].op == "call_function" and outs[4].args[0].op == "placeholder"  # x.clone() stays
    assert [s.arg.name for s in program.graph_signature.output_specs] == [n.name for n in outs]


def test_ios_gives_each_output_its_own_node() -> None:
    from edge_export.exporters.coreml.decompositions import decompose_for_coreml

    program = decompose_for_coreml(_exported(pose_head))
    outs = _outputs(program)
    assert len(set(outs)) == len(outs)
    assert not any(n.op == "placeholder" for n in outs)
    assert [s.arg.name for s in program.graph_signature.output_specs] == [n.name for n in outs]


@pytest.mark.slow
def test_pass_through_outputs_export_and_pass_everywhere(tmp_path: Path) -> None:
    proc, data = export_json("--model", f"{HERE}:pose_head", "--target", "all", "--out", str(tmp_path),
                             "--no-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {p["target"]: p["status"] for p in data["packages"]}
    assert results == {t: "passed" for t in ("android", "ios", "tflite", "coreai")}, proc.stderr[-2000:]
    ios = next(p for p in data["packages"] if p["target"] == "ios")
    manifest = json.loads((Path(ios["path"]) / "manifest.json").read_text())
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(next((Path(ios["path"]) / "model.mlpackage").rglob("*.mlmodel")).read_bytes())
    # apps read Core ML outputs by name: each must carry the manifest's, none lost to a duplicate
    assert [o.name for o in spec.description.output] == [o["name"] for o in manifest["outputs"]]
