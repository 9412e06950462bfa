"""Dynamic dimensions the user declares (``--dynamic input_ids:1=1..512``).

One mechanism serves the export stage and every exporter: the declarations become
``torch.export`` dynamic shapes (``Dim.DYNAMIC`` with the declared range, so torch ties
dimensions that the model makes equal, such as ``input_ids`` and ``attention_mask``
lengths, and refuses when the model fixes a size), and parity is checked at the range's
ends and middle as well as at the example size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_export.errors import UsageError
from edge_export.load.tensors import DynamicDim, TensorSpec

Sample = tuple[np.ndarray, ...]


def is_dynamic(specs: Sequence[TensorSpec]) -> bool:
    return any(s.dynamic for s in specs)


def torch_dynamic_shapes(specs: Sequence[TensorSpec]) -> tuple[dict[int, Any] | None, ...]:
    """Per input, ``{dim: Dim.DYNAMIC(min, max)}`` (None for a static input), positional."""
    from torch.export import Dim

    return tuple({d.dim: Dim.DYNAMIC(min=d.min, max=d.max) for d in s.dynamic} or None for s in specs)


def export_dynamic_shapes(module: Any, specs: Sequence[TensorSpec]) -> Any:
    """``dynamic_shapes`` for ``torch.export.export(module, args)``: wrapped for a ``*args``
    forward (our output adapter), positional otherwise; None when nothing is dynamic."""
    import inspect

    if not is_dynamic(specs):
        return None
    shapes = torch_dynamic_shapes(specs)
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return (shapes,)
    return shapes


def tracing_examples(examples: tuple[Any, ...], specs: Sequence[TensorSpec]) -> tuple[Any, ...]:
    """The example inputs for ``torch.export``: torch specialises a dimension whose example
    size is 1 (a batch of one) whatever range is declared, so such a dimension is traced at
    size 2 (the example, cut or tiled); the artifact still takes size 1."""
    import torch

    sizes = {f"{s.name}:{d.dim}": (2 if s.shape[d.dim] == 1 and d.max >= 2 else s.shape[d.dim])
             for s in specs for d in s.dynamic}
    if all(sizes[f"{s.name}:{d.dim}"] == s.shape[d.dim] for s in specs for d in s.dynamic):
        return examples
    sample = resized_sample(tuple(t.detach().numpy() for t in examples), specs, sizes)
    return tuple(torch.from_numpy(a) for a in sample)


def check_symbolic(program: Any, specs: Sequence[TensorSpec]) -> None:
    """Every declared dimension must be symbolic in the exported program: a model that fixes
    the size (a reshape to a constant, a positional table of one length) is the user's to fix."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"
                    and n.name in program.graph_signature.user_inputs]
    for spec, node in zip(specs, placeholders, strict=False):
        shape = node.meta["val"].shape
        for d in spec.dynamic:
            if isinstance(shape[d.dim], int):
                raise UsageError(f"the model fixes input {spec.name!r} dimension {d.dim} to "
                                 f"{shape[d.dim]}, so it cannot be dynamic",
                                 hint="remove that --dynamic, or make the model size-agnostic there")


# torch.export's words when the traced model contradicts a declared range
_CONSTRAINT_ERRORS = ("Constraints violated", "specialized", "conflicts between user-specified ranges")


def fixed_dimension(exc: BaseException, specs: Sequence[TensorSpec]) -> UsageError | None:
    """A declared dynamic dimension that the model's code fixes (or bounds otherwise) is a
    usage error naming the dimension, not a toolchain failure."""
    text = str(exc)
    if not is_dynamic(specs) or not any(words in text for words in _CONSTRAINT_ERRORS):
        return None
    where = re.search(r"L\['(\w+)'\]\.size\(\)\[(\d+)\]|inputs\['(\w+)'\]\.shape\[(\d+)\]", text)
    dim = f" ({where[1] or where[3]} dimension {where[2] or where[4]})" if where else ""
    return UsageError(f"the model does not take the declared dynamic sizes{dim}: its code fixes or "
                      "limits that dimension (e.g. a reshape to a constant)",
                      hint="narrow or remove the --dynamic range; --debug shows torch.export's reasoning")


def parity_sizes(specs: Sequence[TensorSpec]) -> list[dict[str, int]]:
    """The sizes parity checks besides the example's: each range's minimum, middle and maximum
    (per declared dimension, keyed ``name:dim``), the example size excluded."""
    dims = [(f"{s.name}:{d.dim}", d, s.shape[d.dim]) for s in specs for d in s.dynamic]
    picks = []
    for pick in ("min", "mid", "max"):
        sizes = {key: {"min": d.min, "mid": (d.min + d.max) // 2, "max": d.max}[pick]
                 for key, d, _ in dims}
        if sizes not in picks and any(sizes[key] != example for key, _, example in dims):
            picks.append(sizes)
    return picks


def resized_sample(example: Sample, specs: Sequence[TensorSpec], sizes: dict[str, int]) -> Sample:
    """The example input cut or tiled along its dynamic dimensions to ``sizes``: token ids stay
    valid ids and attention masks stay masks, which random data would not."""
    out = []
    for array, spec in zip(example, specs, strict=True):
        for d in spec.dynamic:
            array = _fit(array, d, sizes[f"{spec.name}:{d.dim}"])
        out.append(np.ascontiguousarray(array))
    return tuple(out)


def _fit(array: np.ndarray, dim: DynamicDim, size: int) -> np.ndarray:
    length = array.shape[dim.dim]
    reps = [1] * array.ndim
    reps[dim.dim] = -(-size // length)
    return np.take(np.tile(array, reps), np.arange(size), axis=dim.dim)


def sizes_label(sample: Sample, specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {'x'.join(map(str, a.shape))}" for s, a in zip(specs, sample, strict=True)
                     if s.dynamic)
