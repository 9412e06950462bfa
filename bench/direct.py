"""The baseline: the three libraries called directly, as a short user script would.

torch.export once, then ExecuTorch (to_edge_transform_and_lower + XNNPACK), Core ML
(ct.convert to an ML Program) and LiteRT (litert_torch.convert); no parity, no packaging.
Usage: python bench/direct.py path/to/model.py:build OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def load(spec: str):
    path, attr = spec.rsplit(":", 1)
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return getattr(module, attr)()


def main(spec: str, out: Path) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    model, inputs = load(spec)
    program = torch.export.export(model.eval(), inputs)

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    (out / "model.pte").write_bytes(edge.to_executorch().buffer)

    import coremltools as ct

    mlmodel = ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                         inputs=[ct.TensorType(shape=tuple(t.shape)) for t in inputs],
                         compute_precision=ct.precision.FLOAT32,  # as edge-export's fp32 recipe
                         minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
    mlmodel.save(str(out / "model.mlpackage"))

    import litert_torch

    litert_torch.convert(model, inputs).export(str(out / "model.tflite"))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
