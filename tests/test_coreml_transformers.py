"""transformers architectures through the ios lowering: decomposed for coremltools,
converted, run by the MIL reference executor and compared with PyTorch.

On main (``run_decompositions({})``) every text model here failed to convert
("Unsupported fx node new_ones") and CLIP with "Unsupported fx node alias".
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from coreml_transformers_zoo import ZOO, convert_to_mil, cosine  # noqa: E402

pytestmark = pytest.mark.slow


def _check_parity(model: nn.Module, args: tuple, path: Path, *, fp16: bool = False) -> None:
    with torch.no_grad():
        want = model(*args)
    want = want if isinstance(want, tuple) else (want,)
    program = convert_to_mil(model, args, path, fp16=fp16)
    assert not program.unsupported_ops()
    got = program.run({name: a.numpy() for name, a in zip(program.input_names, args, strict=True)})
    for name, expected in zip(program.output_names, want, strict=True):
        expected = expected.numpy()
        scale = float(np.abs(expected).max())
        assert cosine(got[name], expected) > (0.999 if fp16 else 0.99999), name
        if not fp16:
            np.testing.assert_allclose(got[name], expected, rtol=1e-3, atol=1e-4 * scale)


# One of each family runs in `make test`; the rest are `extended` (make test-extended).
REPRESENTATIVE = ("bert", "llama", "t5-encoder", "vit", "mobilenetv2", "whisper-encoder", "clip")


@pytest.mark.parametrize("arch", [a if a in REPRESENTATIVE else pytest.param(a, marks=pytest.mark.extended)
                                  for a in sorted(ZOO)])
def test_architecture_converts_and_matches_torch(arch: str, tmp_path: Path) -> None:
    model, args = ZOO[arch]()
    _check_parity(model, args, tmp_path / f"{arch}.mlpackage")


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_fp16_text_models_match_torch(arch: str, tmp_path: Path) -> None:
    model, args = ZOO[arch]()
    _check_parity(model, args, tmp_path / f"{arch}.mlpackage", fp16=True)


class MissingOps(nn.Module):
    """The ops coremltools 9 has no translation for, as transformers and timm emit them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = x.new_ones(x.shape)
        steps = torch.diff(x, dim=-1, prepend=x[..., :1])
        return torch.ops.aten.alias(steps) * 2 + ones


def test_missing_ops_are_decomposed_and_native_ones_kept(tmp_path: Path) -> None:
    from edge_export.exporters.coreml.decompositions import decompose_for_coreml

    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    _check_parity(MissingOps(), (x,), tmp_path / "missing.mlpackage")
    model, args = ZOO["bert"]()
    targets = {str(n.target) for n in decompose_for_coreml(torch.export.export(model, args)).graph.nodes}
    assert not {"aten.new_ones.default", "aten.diff.default", "aten.alias.default"} & targets
    # Fused ops Core ML converts natively are not split into elementwise pieces.
    assert {"aten.layer_norm.default", "aten.linear.default", "aten.gelu.default",
            "aten.scaled_dot_product_attention.default"} <= targets


class TranslatedOps(nn.Module):
    """Core ATen ops with neither a coremltools translation nor a decomposition."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        masks = ((x > 0) | (x < -1)).float() + ((x > 0) ^ (x < -0.5)).float()
        finite = torch.isinf(x / (x > 0).float()).float()
        rounded = torch.trunc(x * 3) + torch.fmod(x * 5, 2.0)
        products = torch.prod(x, dim=-1), torch.prod(x, dim=0, keepdim=True), torch.prod(x).reshape(1)
        return (masks, finite, rounded, *products)


def test_translated_ops_match_torch(tmp_path: Path) -> None:
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    _check_parity(TranslatedOps(), (x,), tmp_path / "translated.mlpackage")
