"""Integer inputs of an fp16-compute Core ML package stay integer.

coremltools declares every input without an explicit dtype as FLOAT16 when the compute
precision is fp16 (iOS16+), so token ids above 2048 were rounded to fp16's grid before
the embedding lookup: all-MiniLM-L6-v2 fell to cosine 0.27 in every ios fp16-compute
recipe (fp16, int8-weight, int4-weight). Here a 5000-row embedding is looked up with odd
ids above 4096, which fp16 cannot represent: the wrong row would be fetched.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("coremltools")
pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="runs the MIL reference executor")


class Lookup(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5000, 2)
        ids = torch.arange(5000)
        with torch.no_grad():  # row i = (i // 64, i % 64): small integers, exact in fp16
            self.table.weight.copy_(torch.stack([ids // 64, ids % 64], dim=1).float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)


def test_fp16_recipe_keeps_token_ids_integer(tmp_path):
    from edge_export.build.exporter import Prepared
    from edge_export.quant.recipe import builtin_recipes
    from exporters.coreml import CoreMLExporter, mil

    ids = torch.tensor([[4097, 4099, 4999, 7, 2049]])
    model = Lookup().eval()
    prepared = Prepared(torch.export.export(model, (ids,)), example_inputs=(ids,),
                        input_names=("ids",), output_names=("rows",))
    CoreMLExporter().lower(prepared, builtin_recipes("ios")["fp16"], tmp_path / "m.mlpackage")

    program = mil.load(tmp_path / "m.mlpackage")
    assert program.compute_precision == "float16"
    got = program.run({"ids": ids.numpy()})["rows"].astype(np.float64)  # fp16 output
    np.testing.assert_array_equal(got[0, :, 0] * 64 + got[0, :, 1], [4097, 4099, 4999, 7, 2049])


class PositionAdd(nn.Module):
    """A linear layer plus an added (1, seq, hidden) constant, as BERT adds its position embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(128, 128)
        self.position = nn.Parameter(torch.randn(1, 32, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.position


def lowered_operations(module: nn.Module, x: torch.Tensor, recipe, tmp_path) -> list:
    """The MIL operations of ``module`` lowered by ``recipe``'s ios scheme, read back from disk."""
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    from exporters.coreml import SCHEMES, CoreMLExporter
    from exporters.coreml.schemes import coremltools

    prepared = SCHEMES[recipe.scheme](torch.export.export(module.eval(), (x,)), recipe, None)
    prepared.example_inputs, prepared.input_names, prepared.output_names = (x,), ("x",), ("y",)
    CoreMLExporter().lower(prepared, recipe, tmp_path / "m.mlpackage")
    model = coremltools().models.MLModel(str(tmp_path / "m.mlpackage"), skip_model_load=True)
    spec = model.get_spec()
    program = milproto_load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)
    return list(program.functions["main"].operations)


def test_weight_recipes_compress_layer_weights_not_added_constants(tmp_path):
    """int4-weight compresses the linear's weight (per block) and leaves the added constant
    float: coremltools would give it one per-tensor int4 scale."""
    from edge_export.quant.recipe import builtin_recipes

    operations = lowered_operations(PositionAdd(), torch.randn(1, 32, 128), builtin_recipes("ios")["int4-weight"],
                                    tmp_path)
    users = [u.op_type for op in operations if op.op_type.startswith("constexpr") for o in op.outputs
             for u in o.child_ops]
    assert users == ["linear"]


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 64)
        self.head = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def test_weight_recipes_leave_keep_float_layers_float(tmp_path):
    """ios weight recipes honour keep_float (so keep_float = "auto" can drive them): the kept
    Linear's weight stays a float constant, the other one is compressed."""
    from edge_export.quant.mechanisms import with_keep_float
    from edge_export.quant.recipe import builtin_recipes
    from exporters.coreml import SCHEMES

    recipe = with_keep_float(builtin_recipes("ios")["int4-weight"], ["head"])
    assert SCHEMES.honours_keep_float(recipe.scheme)
    operations = lowered_operations(TwoLayers(), torch.randn(1, 64), recipe, tmp_path)
    compressed = [op.outputs[0].child_ops[0].name for op in operations if op.op_type.startswith("constexpr")]
    linears = [op.name for op in operations if op.op_type == "linear"]
    assert len(linears) == 2 and compressed == [linears[0]], (compressed, linears)
