"""Transformer blocks stay inside the XNNPACK delegate (exporters/executorch/decompositions.py).

Layer norm, attention (with a padding mask, and causal) and scalar multiplies are lowered to
ops XNNPACK takes, so the whole block is one delegate segment, and the ``.pte`` computes
what the eager block computes on ExecuTorch's own runtime. Latency is measured by
``make zoo-latency`` (docs/LATENCY.md), never asserted here.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")


class Block(torch.nn.Module):
    """A pre-norm encoder block as transformers writes one: LayerNorm, SDPA, scalar scaling."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(32), torch.nn.LayerNorm(32)
        self.qkv, self.out = torch.nn.Linear(32, 96), torch.nn.Linear(32, 32)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, s, 3, 4, 8).permute(2, 0, 3, 1, 4)
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        att = att + torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(att.transpose(1, 2).reshape(b, s, 32)) * 0.5
        return x + self.mlp(self.norm2(x))


def _lowered(program: torch.export.ExportedProgram) -> tuple[int, list[str], object]:
    """(delegate segments, ops left to portable kernels, the edge program)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    calls = [str(n.target) for n in edge.exported_program().graph.nodes if n.op == "call_function"]
    segments = sum("executorch_call_delegate" in c for c in calls)
    return segments, [c for c in calls if "executorch_call_delegate" not in c and "getitem" not in c], edge


@pytest.mark.slow  # ~30 s: lowering builds XNNPACK's SDPA patterns
def test_transformer_block_is_one_delegate_and_matches_eager(tmp_path) -> None:
    from edge_export.exporters.executorch.decompositions import decompose_for_xnnpack
    from executorch.runtime import Runtime

    torch.manual_seed(0)
    block = Block().eval()
    x = torch.randn(1, 6, 32)
    mask = torch.tensor([[True, True, True, True, False, False]])
    program = torch.export.export(block, (x, mask))
    # Without the rewrites (executorch 1.5): several segments with the layer norms, the safe
    # softmax's guards and mul.Scalar between them, on portable kernels.
    segments, left, edge = _lowered(decompose_for_xnnpack(program))
    # one segment; what may stay outside is the boolean mask's preparation, once per call
    assert segments == 1, left
    assert not any(op in c for c in left for op in ("layer_norm", "mul.Scalar", "expand_copy",
                                                      "pow", "bmm", "softmax")), left

    path = tmp_path / "block.pte"
    path.write_bytes(edge.to_executorch().buffer)
    got = Runtime.get().load_program(str(path)).load_method("forward").execute([x, mask])[0]
    with torch.no_grad():
        want = block(x, mask)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
