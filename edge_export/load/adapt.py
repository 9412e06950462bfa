"""Models as users hand them over, adapted to what every exporter takes: positional tensor
inputs, contiguous memory, and a flat tuple of tensor outputs.

Users give keyword inputs (``input_ids=..., attention_mask=...``), tensors with any strides
(an HWC photo transposed to CHW is NHWC in memory), ``channels_last`` weights, and outputs
that are a transformers ``ModelOutput``, a dict or nested tuples. ExecuTorch computes wrong
outputs for channels-last inputs and coremltools refuses them, and the converters disagree
on how they flatten and name structured outputs, so the session fixes all of it once, here,
and names every output by its key path (``logits``, ``hidden_states_0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._pytree import GetAttrKey, MappingKey, SequenceKey, tree_flatten_with_path

from edge_export.errors import UsageError


class FlatCall(torch.nn.Module):
    """The user's module called with positional tensors (passed on by keyword when the user's
    example inputs were keywords) and returning a flat tuple of its output tensors."""

    def __init__(self, module: torch.nn.Module, keywords: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.module = module
        self.keywords = keywords

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(**dict(zip(self.keywords, args, strict=True))) if self.keywords \
            else self.module(*args)
        return tuple(leaf for _, leaf in tree_flatten_with_path(out)[0])


def split_examples(examples: Any) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...]]:
    """(positional tensors, keyword names) from a tensor, a tuple/list or a dict of tensors."""
    if isinstance(examples, torch.Tensor):
        return (examples,), ()
    if isinstance(examples, Mapping):
        names = tuple(str(k) for k in examples)
        return tuple(examples.values()), names
    if isinstance(examples, (tuple, list)):
        return tuple(examples), ()
    return examples, ()


def contiguous(examples: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Example inputs in the default dim order: the artifact's input contract is the
    manifest's shape in row-major order, whatever strides the user's tensor had."""
    return tuple(t.contiguous(memory_format=torch.contiguous_format) for t in examples)


def has_strided_weights(module: torch.nn.Module) -> bool:
    return any(type(p) in (torch.Tensor, torch.nn.Parameter) and not p.is_contiguous()
               for p in [*module.parameters(), *module.buffers()])


def output_names(out: Any) -> list[str]:
    """Names of the flattened outputs: their key paths, or ``output``/``output_N``."""
    leaves = tree_flatten_with_path(out)[0]
    for path, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            where = _path_name(path) or "the output"
            raise UsageError(f"the model returns a {type(leaf).__name__} at {where}, not a tensor",
                             hint="return tensors only (a tensor, tuple, dict or ModelOutput of tensors)")
    if not leaves:
        raise UsageError("the model returns no tensor")
    names = [_path_name(path) for path, _ in leaves]
    names = [n if n and not n[0].isdigit() else f"output_{n}".rstrip("_") for n in names]
    if len(set(names)) != len(names):
        return [f"output_{i}" for i in range(len(leaves))]
    return names


def needs_adapter(out: Any, keywords: tuple[str, ...]) -> bool:
    """Whether the module must be wrapped: keyword inputs, or outputs other than a tensor or
    a flat tuple/list of tensors."""
    if keywords:
        return True
    if isinstance(out, torch.Tensor):
        return False
    return not (type(out) in (tuple, list) and all(isinstance(t, torch.Tensor) for t in out))


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        if isinstance(key, MappingKey):
            parts.append(str(key.key))
        elif isinstance(key, GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, SequenceKey):
            parts.append(str(key.idx))
    return "_".join(parts)


# Ops that hand their input on unchanged: a copy (clone, a same-dtype ``_to_copy``) or a view
# of the whole tensor (alias, detach). Toolchains drop them while lowering, so an output that
# is one of them becomes, to the backend, the tensor it copies.
_COPY_OPS = ("aten.clone.default", "aten.alias.default", "aten.alias_copy.default", "aten.detach.default",
             "aten.detach_copy.default", "aten.lift_fresh_copy.default", "aten._to_copy.default",
             "aten.contiguous.default")
_SAME_LAYOUT = (None, torch.preserve_format, torch.contiguous_format)


def copied_from(node: torch.fx.Node) -> torch.fx.Node:
    """The node a chain of value- and layout-preserving copies of ``node`` starts from."""
    while node.op == "call_function" and str(node.target) in _COPY_OPS and _keeps_value(node):
        node = node.args[0]
    return node


def _keeps_value(node: torch.fx.Node) -> bool:
    if node.kwargs.get("memory_format") not in _SAME_LAYOUT or not isinstance(node.args[0], torch.fx.Node):
        return False
    before, after = node.args[0].meta.get("val"), node.meta.get("val")
    return (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor)
            and before.dtype == after.dtype and before.shape == after.shape)


def user_output_positions(program: Any) -> list[int]:
    """Positions of the model's own outputs among the output node's arguments (buffer
    mutations come first in a stateful program)."""
    from torch.export.graph_signature import OutputKind

    return [i for i, spec in enumerate(program.graph_signature.output_specs) if spec.kind == OutputKind.USER_OUTPUT]


def replace_outputs(program: Any, replacements: dict[int, torch.fx.Node]) -> Any:
    """``program`` with output ``i`` computed by ``replacements[i]`` (the graph signature
    names each output by its node), dead copies removed."""
    graph = program.graph_module.graph
    if not replacements:
        return program
    output = graph.output_node()
    values = list(output.args[0])
    for i, node in replacements.items():
        values[i] = node
        program.graph_signature.output_specs[i].arg.name = node.name
    output.args = (tuple(values),)
    graph.eliminate_dead_code()
    graph.lint()
    program.graph_module.recompile()
    return program


def give_outputs_own_values(program: Any, copy_op: Any, inputs_too: bool) -> Any:
    """``program`` with every output that repeats an earlier output's tensor (directly or
    through copies), and with ``inputs_too`` every output that is a graph input, computed by a
    ``copy_op`` node of its own: converters that name each value once would otherwise merge
    those outputs or lose their names. Each backend passes the copy its converter keeps."""
    graph = program.graph_module.graph
    output = graph.output_node()
    seen, replacements = set(), {}
    for i in user_output_positions(program):
        source = copied_from(output.args[0][i])
        if source in seen or (inputs_too and source.op == "placeholder"):
            with graph.inserting_before(output):
                node = graph.call_function(copy_op, (source,))
            node.meta["val"] = source.meta.get("val")
            replacements[i] = node
        seen.add(source)
    return replace_outputs(program, replacements)
