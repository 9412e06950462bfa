"""The PyTorch module that coremltools turns into a stateful ML Program.

``StatefulLM`` holds one K and one V cache per layer as registered buffers; coremltools
turns each into an iOS 18 state (``ct.StateType``), and each slice assignment at the
``start`` position into ``read_state`` -> ``slice_update`` -> ``coreml_update_state``.
The transformers model itself is unchanged: its attention layers call our attention
function (registered through transformers' ``AttentionInterface``, as the android
backend routes attention through ExecuTorch's custom SDPA), which writes the new keys and
values into the layer's cache and attends over the whole cache with a causal mask
computed from ``start``. So every architecture whose attention goes through the
interface (Llama, Qwen2/3, Mistral, Gemma, Phi-3 ...) exports without a model copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edge_export.llm.attention import routed_attention, through

ATTENTION = "edge_export_coreml_kv"
MASKED = -3.0e4  # additive mask: finite in fp16 (max 65504), exp() underflows to exactly 0


def cache_names(layers: int) -> list[str]:
    return [f"{kind}_cache_{i}" for i in range(layers) for kind in ("k", "v")]


class StatefulLM(nn.Module):
    """``forward(input_ids [1, n] int32, start [1] int32) -> logits [1, n, vocab]``.

    Tokens are written to cache positions ``start .. start+n-1``; token ``i`` attends to
    cache positions ``<= start + i``. Positions past that may hold stale or padding
    keys: they are masked now and overwritten before any later token can see them.
    """

    def __init__(self, model: Any, max_context: int, cache_dtype: torch.dtype) -> None:
        super().__init__()
        config = model.config.get_text_config()
        self.model = model
        self.max_context = max_context
        self.layers = int(config.num_hidden_layers)
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        self.cache_shape = (1, kv_heads, max_context, head_dim)
        for name in cache_names(self.layers):
            self.register_buffer(name, torch.zeros(self.cache_shape, dtype=cache_dtype), persistent=False)
        self._start: Any = None
        self._mask: Any = None

    def forward(self, input_ids: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        position = start.item()
        torch._check(position >= 0)
        torch._check(position + n <= self.max_context)
        positions = start.long() + torch.arange(n)
        hidden = torch.arange(self.max_context)[None, :] > positions[:, None]
        self._start = position
        # a multiply, not where(visible, 0, MASKED): coremltools would store select's scalar
        # branches broadcast to [n, max_context] in the weights (130 KB each at 127 x 256)
        self._mask = (hidden.to(torch.float32) * MASKED)[None, None]  # [1, 1, n, max_context]
        with routed_attention(self.model, ATTENTION, through(self.attend)):
            logits = self.model(input_ids=input_ids.long(), position_ids=positions[None], use_cache=False).logits
        self._start = self._mask = None
        return logits

    def attend(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float | None) -> torch.Tensor:
        """Write this call's K/V into the layer's cache, attend over the whole cache."""
        layer, start, n = module.layer_idx, self._start, key.shape[2]
        k_cache, v_cache = getattr(self, f"k_cache_{layer}"), getattr(self, f"v_cache_{layer}")
        k_cache[:, :, start:start + n] = key.to(k_cache.dtype)
        v_cache[:, :, start:start + n] = value.to(v_cache.dtype)
        groups = query.shape[1] // k_cache.shape[1]
        keys = _repeat_heads(k_cache.to(query.dtype), groups)
        values = _repeat_heads(v_cache.to(query.dtype), groups)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        scores = torch.matmul(query, keys.transpose(2, 3)) * scale + self._mask.to(query.dtype)
        weights = torch.softmax(scores, dim=-1)
        return torch.matmul(weights, values).transpose(1, 2).contiguous()  # [1, n, heads, head_dim]


def _repeat_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped-query attention: each K/V head serves ``groups`` query heads."""
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)
