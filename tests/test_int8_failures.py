"""8-bit failure classes of models as popular libraries build them, each on a tiny model.

Faint activations (a seeded MobileNetV3-small's late layers run at ~1e-7): android
int8-dynamic's PyTorch reference floored every dynamic scale at 2**-12 and returned zeros,
while the ``.pte`` (XNNPACK takes each range as it is) stayed at cosine 0.9996 against float;
the fidelity gate then failed a good artifact with cosine 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import export_json

HERE = Path(__file__).resolve()


class Faint(nn.Module):
    """Two linears; the second reads activations (~1e-5) under the old 2**-13 rounding floor of
    dynamic scales, as MobileNetV3's late layers do with seeded random weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 64, bias=False)
        self.fc2 = nn.Linear(64, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)) * 1e-5)


def faint() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return Faint().eval(), (torch.randn(4, 16, generator=torch.Generator().manual_seed(1)),)


def test_dynamic_reference_keeps_faint_activations() -> None:
    from edge_export.exporters.executorch.quantizer import fused_clamp_quantizer, unfloored_dynamic_ranges
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    from edge_export.quant.mechanisms import run_pt2e

    model, args = faint()
    quantizer = fused_clamp_quantizer().set_global(get_symmetric_quantization_config(is_dynamic=True))
    reference = unfloored_dynamic_ranges(run_pt2e(torch.export.export(model, args), quantizer, [args]))
    with torch.no_grad():
        expected, got = model(*args), reference(*args)
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.99


@pytest.mark.slow
def test_android_int8_dynamic_passes_on_faint_activations(tmp_path: Path) -> None:
    proc, data = export_json("--model", f"{HERE}:faint", "--target", "android", "--recipe", "int8-dynamic",
                             "--out", str(tmp_path), "--no-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (package,) = data["packages"]
    fidelity = json.loads((Path(package["path"]) / "parity.json").read_text())["parity"]["fidelity"]
    assert fidelity["reference"] == "pytorch-quantized"
    assert fidelity["outputs"]["output"]["cosine"] > 0.99
