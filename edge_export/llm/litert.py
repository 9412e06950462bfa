"""tflite: a LiteRT ``.tflite`` with ``prefill_N`` and ``decode`` signatures sharing one set
of weights, the KV cache passed in and returned as tensors the way LiteRT's generative
API lays it out, run on the ``ai_edge_litert`` interpreter.

Both signatures take ``tokens`` (int32 [1, T]), ``input_pos`` (int32 [T]) and
``kv_cache_k_{i}`` / ``kv_cache_v_{i}`` (float32 [1, max_context, kv_heads, head_dim],
litert-torch's default BTNH layout) and return ``logits`` (float32 [1, T, vocab]) and the
updated caches under the same names; T is N for ``prefill_N`` and 1 for ``decode``.
Unlike litert-torch's own LLM exports, prefill returns the logits of every position too,
so teacher forcing and chunked prompts need no decode loop.

We wrap the transformers model ourselves instead of using
``litert_torch.generative.export_hf`` (which imports TensorFlow at load): the model runs
with its own modules, and a registered attention function writes the new K/V into the
cache with litert-torch's ``dynamic_update_slice`` op and attends over the whole cache
with a causal mask built from ``input_pos``.

Quantization is ai-edge-quantizer's dynamic-range recipes on the converted flatbuffer
(``dynamic_wi8_afp32``, ``dynamic_wi4b32_afp32``), read from the float ``.tflite`` the converter
writes to a file (never a Python bytes copy), after the build's PyTorch weights are released.
The same-quantization PyTorch reference is the float model with every quantized weight
snapped to the integer grid AEQ uses (symmetric, per output channel for int8, per block of 32
with bf16-rounded scales for int4), so the exported weights and the reference's are the same numbers; the artifact
additionally quantizes activations to int8 on the fly, which the top-1 gate measures.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.exporter import package_version
from edge_export.errors import UsageError
from edge_export.llm.attention import routed_attention
from edge_export.llm.backend import ExportSpec, LLMBackend, release_weights
from edge_export.llm.quantize import record_unquantized
from edge_export.llm.recipe import LLMRecipe

ATTENTION = "edge_export_litert_sdpa"
# (weights, group size, activations) -> ai-edge-quantizer's named recipe
AEQ_RECIPES = {("int8", 0, "int8-dynamic"): "dynamic_wi8_afp32",
               ("int4", 32, "int8-dynamic"): "dynamic_wi4b32_afp32"}
EMBEDDING_OPS = ("GATHER", "EMBEDDING_LOOKUP")


class LiteRTLLM(LLMBackend):
    target = "tflite"
    artifact_name = "model.tflite"
    format = "LiteRT .tflite (prefill_N and decode signatures, KV cache as tensors)"
    runtime_name = "litert"
    embedding_quantization = True

    def refusal(self, recipe: LLMRecipe) -> str | None:
        if recipe.quantized and _aeq_key(recipe) not in AEQ_RECIPES:
            return (f"no ai-edge-quantizer recipe for {recipe.weights} weights in groups of {recipe.group_size} "
                    f"with {recipe.activations} activations (LiteRT LLMs offer int8 per-channel and int4 "
                    "block-32, both with dynamic int8 activations)")
        return super().refusal(recipe)

    def quantize(self, model: Any, recipe: LLMRecipe) -> Any:
        """Snap the weights AEQ will quantize to its integer grid, in PyTorch (see module doc)."""
        import torch

        if not recipe.quantized:
            return model
        if not recipe.quantize_embeddings:
            _untie_embedding(model)  # a tied table stays one tensor, quantized for both of its ops
        bits, block = {"int8": 8, "int4": 4}[recipe.weights], recipe.group_size
        record_unquantized(model, lambda module: True)  # AEQ quantizes every Linear, or the build is refused
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) or (recipe.quantize_embeddings
                                                           and isinstance(module, torch.nn.Embedding)):
                    if block and module.weight.shape[1] % block:
                        raise UsageError(f"recipe {recipe.name}: {name} has {module.weight.shape[1]} inputs, "
                                         f"not a multiple of the block size {block} LiteRT quantizes in")
                    module.weight.copy_(snap_to_grid(module.weight, bits, block))
        return model

    def export(self, model: Any, spec: ExportSpec, recipe: LLMRecipe, dest: Path) -> None:
        import litert_torch
        import torch

        wrapper = cache_io(model, spec.max_context)
        n = spec.max_seq_len
        samples = {f"prefill_{n}": wrapper.sample(n), "decode": wrapper.sample(1)}
        with torch.no_grad(), routed_attention(model, ATTENTION, _attention), contextlib.redirect_stdout(sys.stderr):
            converter = litert_torch.Converter()
            for name, kwargs in samples.items():
                converter.signature(name, wrapper, sample_kwargs=kwargs)
            # lightweight: the MLIR constants are resources over the PyTorch weights, not copies
            converted = converter.convert(lightweight_conversion=True)
        if not recipe.quantized:
            converted.export(str(dest))
            return
        float_model = dest.with_name(dest.name + ".float")  # written by the converter, never held as bytes
        converted.export(str(float_model))
        del converted, converter, wrapper, samples  # the MLIR module's constants are views of the weights
        release_weights(model)  # the build's own model, its references run: AEQ reads the file alone
        dest.write_bytes(_aeq_quantize(float_model, recipe))
        float_model.unlink()

    def open_session(self, artifact: Path) -> LiteRTSession:
        return LiteRTSession(artifact)

    def tool_versions(self) -> dict[str, str]:
        return {name: package_version(name) for name in
                ("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert", "transformers")}


def _aeq_key(recipe: LLMRecipe) -> tuple[str, int, str]:
    return recipe.weights, recipe.group_size, recipe.activations


def snap_to_grid(weight: Any, bits: int, block: int) -> Any:
    """AEQ's symmetric min/max weight quantization, quantized and dequantized: one scale
    per output row (block 0) or per ``block`` input columns, scale = max|w| / (2^(b-1)-1),
    blockwise scales rounded to bfloat16 as AEQ stores them."""
    import torch

    qmax, qmin = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    rows, cols = weight.shape
    grouped = weight.reshape(rows, cols // block, block) if block else weight.reshape(rows, 1, cols)
    scale = grouped.abs().amax(-1, keepdim=True).clamp_min(1e-9) / qmax
    if block:
        scale = scale.to(torch.bfloat16).to(torch.float16).to(torch.float32)
    q = torch.clamp(torch.round(grouped / scale), qmin, qmax)
    return (q * scale).reshape(rows, cols).to(weight.dtype)


def _untie_embedding(model: Any) -> None:
    """Give the input embedding its own copy of a tied output-layer weight, so the output
    layer (a Linear) and the embedding table are quantized, or not, independently."""
    import torch

    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and embedding.weight is head.weight:
        embedding.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)


def _aeq_quantize(float_model: Path, recipe: LLMRecipe) -> bytearray:
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe as aeq_recipes

    configs = list(getattr(aeq_recipes, AEQ_RECIPES[_aeq_key(recipe)])())
    if not recipe.quantize_embeddings:  # later entries override earlier ones for their ops
        configs += [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"} for op in EMBEDDING_OPS]
    return quantizer.Quantizer(float_model, configs).quantize(enable_progress_report=False).quantized_model


def cache_io(model: Any, max_context: int) -> Any:
    """The causal LM as a module of (tokens, input_pos, caches) -> logits and new caches.

    The caches go into the model's forward as a keyword argument that transformers hands
    to every attention call, where ``_attention`` reads them and records the new ones.
    """
    import torch

    config = model.config.get_text_config()
    layers = config.num_hidden_layers
    heads = config.num_key_value_heads or config.num_attention_heads
    shape = (1, max_context, heads, model.model.layers[0].self_attn.head_dim)

    class CacheIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: Any, input_pos: Any, **caches: Any) -> dict[str, Any]:
            state = {"pos": input_pos, "in": caches, "out": {}}
            logits = self.model(input_ids=tokens, position_ids=input_pos[None], use_cache=False,
                                edge_export_kv=state).logits
            return {"logits": logits, **state["out"]}

        def sample(self, tokens: int) -> dict[str, Any]:
            caches = {f"kv_cache_{kind}_{i}": torch.zeros(shape) for kind in ("k", "v") for i in range(layers)}
            return {"tokens": torch.zeros(1, tokens, dtype=torch.int32),
                    "input_pos": torch.arange(tokens, dtype=torch.int32), **caches}

    return CacheIO().eval()


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
               dropout: float = 0.0, edge_export_kv: dict[str, Any] | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Write this call's K/V at ``input_pos`` and attend causally over the whole cache."""
    import torch
    from litert_torch.generative.custom_ops.dynamic_update_slice import dynamic_update_slice

    state, i = edge_export_kv, module.layer_idx
    pos = state["pos"]
    zero = torch.zeros([], dtype=torch.int32)
    at = [zero, pos[0].reshape([]), zero, zero]  # input_pos is consecutive: one slice per call
    k = dynamic_update_slice(state["in"][f"kv_cache_k_{i}"], key.transpose(1, 2), at)  # BTNH
    v = dynamic_update_slice(state["in"][f"kv_cache_v_{i}"], value.transpose(1, 2), at)
    state["out"][f"kv_cache_k_{i}"], state["out"][f"kv_cache_v_{i}"] = k, v
    # grouped-query attention without repeating the cache: the query heads sharing a KV head
    # become extra rows ([1, kv_heads, groups * T, dim]). Repeating K/V per query head (a
    # BROADCAST_TO of the whole cache every call) measured 17 ms per decode step against 0.8
    # ms this way on the tiny LM at context 256, and 29 against 10 ms per 127-token prefill
    batch, heads, tokens, dim = query.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    rows = query.reshape(batch, kv_heads, groups * tokens, dim)
    scores = rows @ k.permute(0, 2, 3, 1) * (scaling if scaling is not None else dim ** -0.5)
    visible = torch.arange(k.shape[1], dtype=pos.dtype)[None, :] <= pos[:, None]  # [T, max_context]
    bias = torch.where(visible, 0.0, float("-inf")).repeat(groups, 1)  # rows are (group, token)
    out = torch.softmax(scores + bias, dim=-1) @ v.transpose(1, 2)
    out = out.reshape(batch, heads, tokens, dim)
    return out.transpose(1, 2).contiguous(), None


class LiteRTSession:
    """The artifact on the LiteRT interpreter, carrying the KV cache between calls.

    A chunk shorter than N is padded to N for ``prefill_N``: the padding's K/V land after
    the real tokens, where the causal mask hides them until real tokens overwrite them.
    When the padded chunk would run past the cache end (``dynamic_update_slice`` would
    clamp it to the wrong place), the tokens go through ``decode`` one by one instead.
    """

    def __init__(self, artifact: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(artifact), num_threads=min(4, os.cpu_count() or 1))
        signatures = self._interpreter.get_signature_list()
        prefill = next(s for s in signatures if s.startswith("prefill_"))
        self.max_seq_len = int(prefill.removeprefix("prefill_"))
        self._prefill = self._interpreter.get_signature_runner(prefill)
        self._decode = self._interpreter.get_signature_runner("decode")
        details = self._decode.get_input_details()
        self._caches = {name: np.zeros(d["shape"], d["dtype"]) for name, d in details.items()
                        if name.startswith("kv_cache_")}
        self.max_context = int(next(iter(self._caches.values())).shape[1])

    def forward(self, ids: np.ndarray, start: int) -> np.ndarray:
        n = len(ids)
        if n == 1:
            return self._run(self._decode, ids, start)[:1]
        if start + self.max_seq_len > self.max_context:
            return np.concatenate([self._run(self._decode, ids[i:i + 1], start + i) for i in range(n)])
        padded = np.zeros(self.max_seq_len, dtype=np.int64)
        padded[:n] = ids
        return self._run(self._prefill, padded, start)[:n]

    def _run(self, runner: Any, ids: np.ndarray, start: int) -> np.ndarray:
        out = runner(tokens=np.asarray(ids, dtype=np.int32)[None],
                     input_pos=np.arange(start, start + len(ids), dtype=np.int32), **self._caches)
        self._caches = {name: out[name] for name in self._caches}
        return np.asarray(out["logits"][0], dtype=np.float32)
