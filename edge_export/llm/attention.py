"""Attention routed to a backend's own implementation while a transformers model is traced.

Every LLM backend keeps the model's code as transformers wrote it and swaps only attention:
the backend's function writes the K/V cache its way (ExecuTorch's ``llama::update_cache``,
Core ML states, LiteRT cache tensors) and masks causally itself, so the model's own mask
builder is switched off for the duration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def routed_attention(model: Any, name: str, attention: Callable[..., tuple[Any, Any]]) -> Iterator[None]:
    """Register ``attention`` (transformers' ``AttentionInterface`` signature) as ``name`` and
    make ``model`` use it, and no attention mask, until the block ends."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, lambda *args, **kwargs: None)  # ``attention`` masks
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def through(attend: Callable[..., Any]) -> Callable[..., tuple[Any, None]]:
    """An ``AttentionInterface`` function calling ``attend(module, query, key, value, scaling)``,
    the form the wrappers that own their cache implement."""

    def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                  scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
        return attend(module, query, key, value, scaling), None

    return attention
