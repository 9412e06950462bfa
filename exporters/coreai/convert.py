"""torch.export program → Core AI program → ``.aimodel``, with coreai-torch and coreai-opt.

coreai-torch converts a program decomposed with its own table (``get_decomp_table()``:
core ATen minus the ops it lowers as fused Core AI composites). Core ATen ops it has no
lowering for stop the conversion; ``aten.as_strided`` is one (ConvNeXt-style blocks and
hand-written sliding windows emit it), and the ``aten`` namespace is closed to
``register_torch_lowering``, so it is decomposed here into a gather on the flattened input.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

# Written by coreai-core into metadata.json at every save: wall-clock data would make
# two exports of the same model differ.
VOLATILE_METADATA = ("creationDate",)


def decomposition_table() -> dict:
    import coreai_torch
    import torch

    table = coreai_torch.get_decomp_table()
    table[torch.ops.aten.as_strided.default] = as_strided_as_gather
    return table


def as_strided_as_gather(x: Any, size: Any, stride: Any, storage_offset: int | None = None) -> Any:
    """``as_strided`` of a dense tensor, as indexing into its elements in storage order.

    Element ``(i_0, .., i_n)`` of the result is storage position
    ``storage_offset + sum(i_k * stride_k)``; the input laid out in storage order
    (dimensions by decreasing stride, then flattened) has that element at the position
    minus the input's own offset. Sizes and strides are static in a program we convert, so
    the index tensor is a constant of the graph."""
    import torch

    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    dense = all(x.stride(d) == math.prod(x.shape[o] for o in order[i + 1:]) or x.shape[d] == 1
                for i, d in enumerate(order))
    if not dense:
        raise NotImplementedError("as_strided of a tensor whose elements overlap or leave gaps")
    flat = x.permute(order).reshape(-1)
    start = (x.storage_offset() if storage_offset is None else storage_offset) - x.storage_offset()
    index = torch.full(tuple(size), start, dtype=torch.int64, device=x.device)
    for dim, (n, s) in enumerate(zip(size, stride, strict=True)):
        shape = [1] * len(size)
        shape[dim] = n
        index = index + (torch.arange(n, device=x.device) * s).reshape(shape)
    return flat[index]


def decompose(program: Any) -> Any:
    """The program in the ATen subset coreai-torch lowers, every output its own value."""
    return distinct_outputs(program.run_decompositions(decomposition_table()))


def distinct_outputs(program: Any) -> Any:
    """Give an output that repeats an earlier output's tensor (directly or through copies) a
    clone of its own: coreai-torch names each distinct value once, so a tensor returned twice
    leaves fewer live outputs than output names and the conversion stops."""
    import torch

    from edge_export.load.adapt import give_outputs_own_values

    return give_outputs_own_values(program, torch.ops.aten.clone.default, inputs_too=False)


def to_program(program: Any, input_names: tuple[str, ...], output_names: tuple[str, ...],
               precision: str) -> Any:
    """The Core AI program (``AIProgram``) of a torch.export program. ``float16``: coreai-opt's
    cast pass runs first, so weights, float inputs and arithmetic are 16-bit (Core AI keeps
    the ops it knows to overflow in fp32)."""
    import coreai_torch

    program = decompose(program)
    if precision == "float16":
        from coreai_opt.casting import cast_fp32_to_fp16

        program = cast_fp32_to_fp16(program)
    converter = coreai_torch.TorchConverter(mode=coreai_torch.TorchConverter.Mode.RELEASE)
    converter.add_exported_program(program, input_names=list(input_names), output_names=list(output_names))
    return converter.to_coreai()


def save(ai_program: Any, dest: Path) -> None:
    """Write the ``.aimodel`` directory, byte-reproducible: weight handles named canonically,
    no wall-clock metadata (``main.hash``, the bytecode's sha256, is written by save_asset)."""
    canonical_handles(ai_program).save_asset(dest)
    metadata_path = dest / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    for key in VOLATILE_METADATA:
        metadata.pop(key, None)
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def canonical_handles(ai_program: Any) -> Any:
    """The program with its weight blobs named ``weight_<n>`` in order of first use.

    Core AI's compiler names each weight blob (``dense_resource<resource_N>``) by a content
    hash with a per-process seed (coreai_torch/debugging/graph_match.py says so), so two
    exports of one model differ in those names and nothing else. The program is printed,
    renamed and parsed back, which keeps every op and byte of weight data as it was."""
    from coreai._compiler import ir
    from coreai.authoring.asset import AIProgram

    text = str(ai_program)
    handles = list(dict.fromkeys(re.findall(r"dense_resource<([\w.$-]+)>", text)))
    renamed = {old: f"weight_{i}" for i, old in enumerate(handles)}
    if not renamed:
        return ai_program
    pattern = re.compile(r"(?<=dense_resource<)([\w.$-]+)(?=>)|^(\s*)([\w.$-]+)(?=: \"0x)", re.MULTILINE)

    def rename(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return renamed[m.group(1)]
        return m.group(2) + renamed.get(m.group(3), m.group(3))

    context = ai_program._module._mlir_module.context  # noqa: SLF001 - the program's own dialects
    return AIProgram._from_mlir_module(ir.Module.parse(pattern.sub(rename, text), context))  # noqa: SLF001


# Runtime checks that coreai-torch drops before converting (its validator skips them too).
CHECKS = ("aten._assert_", "aten.sym_constrain_range")


def not_lowerable(program: Any) -> list[str]:
    """ATen ops left after :func:`decompose` that coreai-torch has no lowering for (each
    stops the conversion), by coreai-torch's own resolver table, which its converter and
    validator look ops up in."""
    from coreai_torch._aten_to_core import _aten_to_core_resolver
    from coreai_torch._decomp import _COMPOSITE_OPS

    kept = {str(op) for op in _COMPOSITE_OPS}
    missing = set()
    for node in decompose(program).graph.nodes:
        name = str(node.target)
        if node.op == "call_function" and name.startswith("aten.") and name not in kept \
                and not name.startswith(CHECKS) and name.removeprefix("aten.") not in _aten_to_core_resolver:
            missing.add(name.removeprefix("aten.").removesuffix(".default"))
    return sorted(missing)
