"""A CLIP-style text tower that pools at ``input_ids.argmax(-1)`` over int64 ids exports to tflite.

OpenCLIP's text encoder pools with ``x[torch.arange(B), text.argmax(dim=-1)]``: the end-of-text
token has the highest id. litert-torch lowered that argmax to a ``tfl.arg_max`` on int64, which
LiteRT has no kernel for, and conversion stopped at "failed to legalize operation".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import export_json

HERE = Path(__file__).resolve()
EOT = 63


class TextTower(nn.Module):
    """Token and position embeddings, one transformer layer, pooled at the end-of-text token."""

    def __init__(self, vocab: int = 64, width: int = 32, length: int = 8) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(length, width) * 0.02)
        self.block = nn.TransformerEncoderLayer(width, 4, 64, batch_first=True, dropout=0.0)
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, 16, bias=False)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.block(self.tok(text) + self.pos))
        return self.proj(x[torch.arange(x.shape[0]), text.argmax(dim=-1)])


def text_tower() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(1, EOT - 1, (2, 8), generator=torch.Generator().manual_seed(1))
    ids[0, 5], ids[1, 7] = EOT, EOT  # two lengths: the pooled rows differ
    return TextTower().eval(), (ids,)


def test_int64_argmax_reads_an_int32_cast() -> None:
    from edge_export.exporters.litert.rewrites import rewrite_for_litert

    model, args = text_tower()
    module = rewrite_for_litert(torch.export.export(model, args).module())
    argmax = next(n for n in module.graph.nodes if n.target == torch.ops.aten.argmax.default)
    assert argmax.args[0].meta["val"].dtype == torch.int32
    torch.testing.assert_close(module(*args), model(*args), rtol=0, atol=0)


@pytest.mark.slow
def test_clip_style_text_tower_passes_on_tflite(tmp_path: Path) -> None:
    proc, data = export_json("--model", f"{HERE}:text_tower", "--target", "tflite", "--out", str(tmp_path),
                             "--no-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (package,) = data["packages"]
    assert package["status"] == "passed"
    assert package["parity"]["outputs"]["output"]["cosine"] > 0.9999
