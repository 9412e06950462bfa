"""Load and export stages: run once per session, in the main process.

They leave a *workspace* of plain files (the exported program, the weights, parity
inputs with PyTorch reference outputs, calibration and evaluation samples) from
which every (target, recipe) job reads, wherever it runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.cache import arrays_sha256
from edge_export.build.capture import toolchain_output
from edge_export.build.job import ModelInfo
from edge_export.errors import ToolchainError, UsageError, summarize_exception
from edge_export.load.data import load_samples, random_samples
from edge_export.load.dynamic import (
    check_symbolic,
    export_dynamic_shapes,
    fixed_dimension,
    parity_sizes,
    resized_sample,
    tracing_examples,
)
from edge_export.load.model import LoadedModel, eager_outputs, load_model
from edge_export.load.tasks import get_task, task_kinds
from edge_export.load.tensors import DynamicDim
from edge_export.package.hashing import weights_sha256
from edge_export.quant.mixed_precision import SELECTION_SAMPLES, is_auto


@dataclass(frozen=True)
class Workspace:
    model: ModelInfo
    parity_from: str
    inputs_sha256: dict[str, str]  # exported graph and data hashes, for the cache key


def prepare(opts: Any, folder: Path, plan: list) -> Workspace:
    import torch

    loaded = load_model(opts.model, input_specs=list(opts.inputs),
                        trust_pickle=opts.trust_pickle, name=opts.name, dynamic=dynamic_declarations(opts.dynamic),
                        task=opts.task)
    specs = loaded.inputs
    for spec in specs:
        if spec.dtype in ("float64", "complex64"):
            raise UsageError(f"input {spec.name!r} is {spec.dtype}, which no target takes",
                             hint="cast the model to float32")
    parity, parity_from = _parity_samples(opts, loaded)
    folder.mkdir(parents=True)
    calibration, spare = [], []
    auto = any(is_auto(r) for _, r in plan)
    if opts.calibration_data is not None:
        limit = opts.calibration_samples or max(r.calibration_samples for _, r in plan)
        loaded_calibration, _ = load_samples(opts.calibration_data, specs, flag="--calibration-data",
                                             preprocessing=loaded.preprocessing,
                                             limit=limit + (SELECTION_SAMPLES if auto else 0))
        calibration, spare = loaded_calibration[:limit], loaded_calibration[limit:]
    if opts.eval_data is not None:
        _write_eval(opts, loaded, folder)
    reference = [tuple(eager_outputs(loaded.reference, _torch(s))) for s in parity]
    # A torchao model is gated on the user's module (out_); its dequantized float copy's
    # outputs (float_out_) give the quality against float (verify/artifact.py).
    dequantized = ([tuple(eager_outputs(loaded.module, _torch(s))) for s in parity]
                   if loaded.user_module is not None else [])
    np.savez(folder / "parity.npz", **stable_arrays(parity, "in_"),
             **stable_arrays(reference, "out_"), **stable_arrays(dequantized, "float_out_"))
    if calibration:
        np.savez(folder / "calibration.npz", **stable_arrays(calibration, "in_"))
    if auto:
        _write_selection(loaded, folder, calibration, spare, opts.parity_samples)
    try:
        with toolchain_output(folder / "export.log", enabled=not opts.debug):  # torch prints graphs
            program = torch.export.export(loaded.module, tracing_examples(loaded.example_inputs, specs),
                                          dynamic_shapes=export_dynamic_shapes(loaded.module, specs))
    except Exception as exc:  # noqa: BLE001 - summarised for the user, traceback on --debug
        raise (fixed_dimension(exc, specs) or export_failure(exc, opts.model)) from exc
    check_symbolic(program, specs)
    _write_sizes(loaded, parity[0], folder)
    torch.export.save(program, str(folder / "program.pt2"))
    _write_app_vectors(loaded, folder)
    torch.save(loaded.module.state_dict(), str(folder / "weights.pt"))
    model = ModelInfo(
        spec=opts.model, name=loaded.name, version=opts.version, inputs=tuple(specs),
        output_names=tuple(loaded.output_names),
        labels=tuple(loaded.labels) if loaded.labels else None,
        preprocessing=loaded.preprocessing, weights_sha256=weights_sha256(loaded.module),
        trust_pickle=opts.trust_pickle, input_overrides=tuple(opts.inputs),
        output_kinds=output_kinds(program, loaded), compression=loaded.compression.to_json(),
        graph_sha256=graph_sha256(program), task=loaded.task)
    return Workspace(model, parity_from, {"graph": model.graph_sha256, **data_sha256(folder)})


def dynamic_declarations(pairs: tuple[tuple[str, DynamicDim], ...]) -> dict[str, list[DynamicDim]]:
    declared: dict[str, list[DynamicDim]] = {}
    for name, dim in pairs:
        declared.setdefault(name, []).append(dim)
    return declared


def _write_sizes(loaded: LoadedModel, example: tuple[np.ndarray, ...], folder: Path) -> None:
    """Parity inputs at the other sizes of the declared dynamic dimensions, with PyTorch's
    outputs (``sizes.npz``: ``s{k}_in_{i}`` / ``s{k}_out_{j}``, one sample per size)."""
    arrays = {}
    for k, sizes in enumerate(parity_sizes(loaded.inputs)):
        sample = resized_sample(example, loaded.inputs, sizes)
        arrays.update({f"s{k}_in_{i}": a for i, a in enumerate(sample)})
        outputs = eager_outputs(loaded.reference, _torch(sample))
        arrays.update({f"s{k}_out_{j}": a for j, a in enumerate(outputs)})
    if arrays:
        np.savez(folder / "sizes.npz", **arrays)


def output_kinds(program: Any, loaded: LoadedModel) -> tuple[str, ...]:
    """What each output is, which decides whether top-1 agreement means anything: declared in
    ``edge_export_metadata["output_kinds"]``, else class logits when the model has labels (its
    first output), the output is named ``*logits`` (the transformers convention) or feeds a
    softmax/argmax in the graph, class probabilities when a softmax produces it, else a plain
    tensor (embeddings, hidden states, boxes), gated on cosine and SNR only. A task
    (``--task``) replaces the heuristic: see edge_export.load.tasks."""
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    kinds = []
    for i, (name, node) in enumerate(zip(loaded.output_names, output_node.args[0], strict=False)):
        producer = str(getattr(node, "target", ""))
        consumers = [str(u.target) for u in getattr(node, "users", ()) if u.op == "call_function"]
        if name in loaded.declared_kinds:
            kinds.append(loaded.declared_kinds[name])
        elif "softmax" in producer:
            kinds.append("class-probabilities")
        elif ((loaded.labels and i == 0) or name.endswith("logits")
              or any("softmax" in c or "argmax" in c for c in consumers)):
            kinds.append("class-logits")
        else:
            kinds.append("tensor")
    if loaded.task:
        return task_kinds(get_task(loaded.task), tuple(kinds), loaded.declared_kinds, loaded.output_names)
    return tuple(kinds)


def graph_sha256(program: Any) -> str:
    """The exported graph's ops, arguments and signature (weights are hashed separately)."""
    text = f"{program.graph}\n{program.graph_signature}"
    return hashlib.sha256(text.encode()).hexdigest()


def data_sha256(folder: Path) -> dict[str, str]:
    hashes = {}
    for name in ("parity", "calibration", "selection", "eval", "sizes"):
        path = folder / f"{name}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as npz:
                hashes[name] = arrays_sha256({k: npz[k] for k in npz.files})
    return hashes


def _torch(sample: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(a.copy()) for a in sample)


def _parity_samples(opts: Any, loaded: LoadedModel) -> tuple[list, str]:
    examples = [tuple(t.detach().numpy() for t in loaded.example_inputs)]
    if opts.validation_data is not None:
        samples, _ = load_samples(opts.validation_data, loaded.inputs, flag="--validation-data",
                                  preprocessing=loaded.preprocessing, limit=opts.parity_samples)
        return examples + samples, "validation-data"
    return examples + random_samples(loaded.inputs, opts.parity_samples), "random"


def _write_selection(loaded: LoadedModel, folder: Path, calibration: list, spare: list,
                     random_count: int) -> None:
    """The samples keep_float = "auto" chooses on (``selection.npz``), never the parity samples
    it reports on, so the reported parity is out of sample: the calibration data's samples past
    those any recipe calibrates on; without spare ones the calibration samples themselves (the
    choice then sees what the quantizer saw, the report still does not); without calibration
    data, random inputs of another seed than the random parity inputs (seed 0)."""
    if spare:
        samples, source, overlaps = spare, "calibration-data", False
    elif calibration:
        samples, source, overlaps = calibration[:SELECTION_SAMPLES], "calibration-data", True
    else:
        samples, source, overlaps = random_samples(loaded.inputs, random_count, seed=1), "random", False
    reference = [tuple(eager_outputs(loaded.reference, _torch(s))) for s in samples]
    np.savez(folder / "selection.npz", **stable_arrays(samples, "in_"), **stable_arrays(reference, "out_"),
             source=np.array(source), overlaps_calibration=np.array(overlaps))


def _write_eval(opts: Any, loaded: LoadedModel, folder: Path) -> None:
    samples, labels = load_samples(opts.eval_data, loaded.inputs, flag="--eval-data",
                                   preprocessing=loaded.preprocessing, require_labels=True)
    hits = [int(np.argmax(eager_outputs(loaded.reference, _torch(s))[0])) == int(y)
            for s, y in zip(samples, labels, strict=True)]
    np.savez(folder / "eval.npz", **stable_arrays(samples, "in_"), labels=labels,
             float_accuracy=np.float64(100.0 * np.mean(hits)))


def export_failure(exc: BaseException, spec: str) -> ToolchainError:
    """torch.export's error, summarised with the line of the user's model it points at."""
    text = str(exc)
    where = ""
    model_file = spec.rsplit(":", 1)[0] if ":" in spec else spec
    name = Path(model_file).name
    for match in re.finditer(r'File "?([^",\n]+)"?, line (\d+)', text):
        if Path(match[1]).name == name:
            where = f" ({name} line {match[2]})"
    if not where:
        for match in re.finditer(r"([\w./-]+\.py):(\d+)", text):
            if Path(match[1]).name == name:
                where = f" ({name} line {match[2]})"
    return ToolchainError(f"torch.export failed: {summarize_exception(exc)}{where}",
                          hint="make the model traceable (no data-dependent Python control "
                          "flow; use torch.cond) or run with --debug")


def stable_arrays(samples: list[tuple[np.ndarray, ...]], prefix: str) -> dict[str, np.ndarray]:
    """Stack samples column-wise as ``{prefix}{i}`` arrays for the workspace npz files."""
    if not samples:
        return {}
    return {f"{prefix}{i}": np.stack([s[i] for s in samples]) for i in range(len(samples[0]))}


def _write_app_vectors(loaded: LoadedModel, folder: Path) -> None:
    """For image models, golden vectors of the apps' own preprocessing (image → tensor →
    top-k), made from the example input so every package of the model carries the same."""
    pre = loaded.preprocessing
    if "image_size" not in pre or len(loaded.inputs) != 1:
        return
    from PIL import Image

    from edge_export.package.preprocess import write_app_vectors

    x = loaded.example_inputs[0].detach().numpy()[0]
    chw = x if pre.get("layout", "NCHW") == "NCHW" else np.moveaxis(x, -1, 0)
    mean = np.asarray(pre.get("mean", [0.0]), np.float64).reshape(-1, 1, 1)
    std = np.asarray(pre.get("std", [1.0]), np.float64).reshape(-1, 1, 1)
    pixels = (chw * std + mean) / pre.get("scale", 1.0)
    if pre.get("invert"):
        pixels = 255.0 - pixels
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    image = (Image.fromarray(pixels[0], "L") if pixels.shape[0] == 1
             else Image.fromarray(np.moveaxis(pixels, 0, -1), "RGB"))
    entry = write_app_vectors(folder / "golden", pre, list(loaded.inputs[0].shape),
                              lambda t: eager_outputs(loaded.reference, (_torch_one(t),))[0], image)
    (folder / "app_vectors.json").write_text(json.dumps(entry, sort_keys=True))


def _torch_one(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))
