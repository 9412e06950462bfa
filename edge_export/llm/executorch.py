"""android: an ExecuTorch ``.pte`` (XNNPACK) with a static KV cache and the metadata
methods ExecuTorch's LLM runner reads.

The model is exported through ``executorch_cache.CachedLM`` (the KV cache as mutable
buffers in ExecuTorch's layout; ``forward(tokens, input_pos)`` serves both prefill, with a
dynamic token count, and decode). Attention goes through ExecuTorch's ``llama::update_cache``
and ``llama::custom_sdpa`` ops, which write the cache in place, read the whole cache and
mask causally from the start position: custom SDPA measured 6.5x decode on the tiny LM
against the ATen SDPA graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.exporter import package_version
from edge_export.exporters.executorch.patterns import skip_unmatchable_patterns
from edge_export.llm.backend import ExportSpec, LLMBackend
from edge_export.llm.recipe import LLMRecipe


class ExecuTorchLLM(LLMBackend):
    target = "android"
    artifact_name = "model.pte"
    format = "ExecuTorch .pte (XNNPACK delegate, static KV cache)"
    runtime_name = "executorch"
    embedding_quantization = True  # torchao weight-only Embedding, fused to embedding_4bit/byte

    def export(self, model: Any, spec: ExportSpec, recipe: LLMRecipe, dest: Path) -> None:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass
        from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

        from edge_export.llm.executorch_cache import CachedLM

        wrapper = CachedLM(model, spec.max_context).eval()
        tokens = torch.export.Dim("tokens", max=spec.max_seq_len)
        example = (torch.tensor([[spec.bos_id or 0, 1]], dtype=torch.long), torch.arange(2))
        with torch.no_grad():
            program = torch.export.export(wrapper, example, dynamic_shapes=({1: tokens}, {0: tokens}), strict=False)
        metadata = {"get_max_seq_len": spec.max_seq_len, "get_max_context_len": spec.max_context,
                    "get_bos_id": spec.bos_id if spec.bos_id is not None else -1,
                    "get_eos_ids": spec.eos_ids, "get_vocab_size": spec.vocab_size,
                    "use_kv_cache": True, "enable_dynamic_shape": True, "use_sdpa_with_kv_cache": False}
        with skip_unmatchable_patterns():  # custom SDPA leaves no softmax for XNNPACK's SDPA patterns
            edge = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()], constant_methods=metadata,
                compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True))
        del program
        executorch_program = edge.to_executorch(config=ExecutorchBackendConfig(
            do_quant_fusion_and_const_prop=True,
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=True),
            emit_mutable_buffer_names=True, extract_delegate_segments=True,
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))
        dest.write_bytes(executorch_program.buffer)

    def open_session(self, artifact: Path) -> ExecuTorchSession:
        return ExecuTorchSession(artifact)

    def tool_versions(self) -> dict[str, str]:
        return {name: package_version(name) for name in ("torch", "executorch", "torchao", "transformers")}


class ExecuTorchSession:
    def __init__(self, artifact: Path) -> None:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401 - registers llama::custom_sdpa
        import executorch.kernels.quantized  # noqa: F401 - q/dq ops left outside XNNPACK
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(str(artifact))
        self.max_seq_len = int(program.load_method("get_max_seq_len").execute([])[0])
        self.max_context = int(program.load_method("get_max_context_len").execute([])[0])
        self._method = program.load_method("forward")

    def forward(self, ids: np.ndarray, start: int) -> np.ndarray:
        import torch

        tokens = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))[None]
        positions = torch.arange(start, start + len(ids), dtype=torch.long)
        return self._method.execute([tokens, positions])[0][0].numpy().copy()
