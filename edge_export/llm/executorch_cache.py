"""The module the android backend exports: the transformers model with a KV cache that
ExecuTorch's own LLM ops write and read in place."""

from __future__ import annotations

from typing import Any

import torch

from edge_export.llm.attention import routed_attention, through

ATTENTION = "edge_export_et_sdpa"


class CachedLM(torch.nn.Module):
    """``forward(tokens [1, n] int64, input_pos [n] int64) -> logits [1, n, vocab]``, the
    signature ExecuTorch's LLM runner calls, with one K and one V cache per layer as mutable
    buffers in ExecuTorch's own layout, [1, max_context, kv_heads, head_dim].

    The transformers model runs unchanged with its attention routed (``AttentionInterface``)
    to ``attend``: ``llama::update_cache`` writes this call's K/V into the buffers in place
    and ``llama::custom_sdpa`` attends over them, masking causally from the start position
    itself. transformers' static cache instead lays the cache out [1, heads, positions, dim]
    and updates it with ``index_put`` + a copy-back of the whole buffer, and the op needs it
    transposed: copies of every layer's cache at every decode step.
    """

    def __init__(self, model: Any, max_context: int) -> None:
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401 - defines the llama:: ops

        super().__init__()
        config = model.config.get_text_config()
        self.model, self.max_context = model, max_context
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        for i in range(int(config.num_hidden_layers)):
            for kind in ("k", "v"):
                self.register_buffer(f"{kind}_cache_{i}", torch.zeros(1, max_context, kv_heads, head_dim),
                                     persistent=False)
        self._start: Any = None

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + tokens.shape[1] <= self.max_context)
        self._start = start
        try:
            with routed_attention(self.model, ATTENTION, through(self.attend)):
                return self.model(input_ids=tokens, position_ids=input_pos[None], use_cache=False).logits
        finally:
            self._start = None

    def attend(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float | None) -> torch.Tensor:
        """[1, heads, n, dim] query/key/value of one layer -> [1, n, heads, dim]."""
        i = module.layer_idx
        k_cache, v_cache = getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")
        torch.ops.llama.update_cache(key.transpose(1, 2), k_cache, self._start)
        torch.ops.llama.update_cache(value.transpose(1, 2), v_cache, self._start)
        out = torch.ops.llama.custom_sdpa(query.transpose(1, 2), k_cache, v_cache, self._start, None, 0.0, True,
                                          scaling)
        return out.to(query.dtype)
