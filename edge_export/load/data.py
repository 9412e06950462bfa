"""Sample data for calibration, parity and evaluation: .npz, .pt or a folder of images.

Every loader returns a list of samples, each a tuple of numpy arrays shaped and typed
like the model's example inputs, so the rest of the pipeline never guesses layouts.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edge_export.errors import UsageError
from edge_export.load.tensors import TensorSpec

Sample = tuple[np.ndarray, ...]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_samples(path: str | Path, specs: list[TensorSpec], *, flag: str,
                 preprocessing: dict | None = None, limit: int | None = None,
                 require_labels: bool = False) -> tuple[list[Sample], np.ndarray | None]:
    """(samples, labels or None). ``limit`` keeps the first N (deterministic)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path} does not exist")
    if path.is_dir():
        samples, labels = _from_images(path, specs, preprocessing or {}, flag), None
    elif path.suffix == ".npz":
        samples, labels = _from_npz(path, specs, flag)
    elif path.suffix in (".pt", ".pth"):
        samples, labels = _from_pt(path, specs, flag), None
    else:
        raise UsageError(f"{flag} {path}: unsupported file type {path.suffix or '(none)'}",
                         hint="use .npz, .pt or a directory of PNG/JPEG images")
    if not samples:
        raise UsageError(f"{flag} {path} holds no samples")
    if require_labels and labels is None:
        raise UsageError(f"{flag} {path} has no 'labels' array",
                         hint="save the class index of every sample under the key 'labels'")
    if limit is not None:
        samples = samples[:limit]
        labels = labels[:limit] if labels is not None else None
    return samples, labels


def _from_npz(path: Path, specs: list[TensorSpec], flag: str) -> tuple[list[Sample], np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{flag} {path} is not a readable .npz file: {exc}") from exc
    labels = arrays.pop("labels", None)
    names = [s.name for s in specs]
    if all(n in arrays for n in names):
        columns = [arrays[n] for n in names]
    elif all(f"arr_{i}" in arrays for i in range(len(specs))):
        columns = [arrays[f"arr_{i}"] for i in range(len(specs))]
    else:
        raise UsageError(f"{flag} {path} has keys {sorted(arrays)}; expected the model's inputs "
                         f"{names} (or arr_0..arr_{len(specs) - 1})")
    counts = {len(c) for c in columns if c.ndim > 0}
    if len(counts) != 1:
        raise UsageError(f"{flag} {path}: arrays disagree on the number of samples")
    count = counts.pop()
    if labels is not None and len(labels) != count:
        raise UsageError(f"{flag} {path}: {len(labels)} labels for {count} samples")
    samples = [tuple(_fit(col[i], spec, flag, path) for col, spec in zip(columns, specs, strict=True))
               for i in range(count)]
    return samples, labels


def _from_pt(path: Path, specs: list[TensorSpec], flag: str) -> list[Sample]:
    import torch

    try:
        obj = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise UsageError(f"{flag} {path} is not a tensor file torch can load safely: "
                         f"{str(exc).splitlines()[0][:160]}") from exc
    if isinstance(obj, torch.Tensor):
        if len(specs) != 1:
            raise UsageError(f"{flag} {path} holds one tensor; the model takes {len(specs)} inputs")
        return [(_fit(obj[i].numpy(), specs[0], flag, path),) for i in range(len(obj))]
    if isinstance(obj, (list, tuple)):
        samples = []
        for item in obj:
            item = (item,) if isinstance(item, torch.Tensor) else tuple(item)
            if len(item) != len(specs):
                raise UsageError(f"{flag} {path}: a sample has {len(item)} tensors, "
                                 f"the model takes {len(specs)}")
            samples.append(tuple(_fit(t.numpy(), s, flag, path) for t, s in zip(item, specs, strict=True)))
        return samples
    raise UsageError(f"{flag} {path} holds a {type(obj).__name__}; expected a tensor or a list of "
                     "input tuples")


def _from_images(folder: Path, specs: list[TensorSpec], preprocessing: dict, flag: str) -> list[Sample]:
    from PIL import Image, UnidentifiedImageError

    from edge_export.package.preprocess import image_to_tensor

    if len(specs) != 1:
        raise UsageError(f"{flag} {folder}: image folders feed single-input models only")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    samples = []
    for file in files:
        try:
            with Image.open(file) as img:
                tensor = image_to_tensor(img, preprocessing, list(specs[0].shape))
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"{flag} {file} is not a readable image: {exc}") from exc
        samples.append((_fit(tensor, specs[0], flag, file),))
    return samples


def _fit(array: np.ndarray, spec: TensorSpec, flag: str, path: Path) -> np.ndarray:
    """One sample shaped like the example input (adds the batch axis when it is missing)."""
    array = np.asarray(array)
    if array.shape != spec.shape and (1,) + array.shape == spec.shape:
        array = array[None]
    if array.shape != spec.shape:
        raise UsageError(f"{flag} {path}: a sample of input {spec.name!r} has shape "
                         f"{list(array.shape)}, the model expects {list(spec.shape)}")
    return np.ascontiguousarray(array.astype(spec.dtype, copy=False))


def random_samples(specs: list[TensorSpec], count: int, seed: int = 0) -> list[Sample]:
    """Deterministic inputs of the example shapes, for parity when no data is given."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = []
        for spec in specs:
            if spec.dtype.startswith("float"):
                sample.append(rng.standard_normal(spec.shape).astype(spec.dtype))
            elif spec.dtype == "bool":
                sample.append(rng.integers(0, 2, spec.shape).astype(bool))
            else:
                sample.append(rng.integers(0, 10, spec.shape).astype(spec.dtype))
        samples.append(tuple(sample))
    return samples
