"""The app preprocessing spec (docs/app-spec.md) in Python, mirrored by the demo apps.

The Kotlin and Swift apps turn a drawn or shipped image into the model input with
exactly these steps, so a package can carry an image, the tensor it must become and
the top-k it must produce (``app_vectors``): the apps check themselves against them.

Every step is written so that a float64 implementation in another language gives
bit-identical results (integer numerators, one division each, a fixed summation
order); only the final cast is to float32. PIL is used for decoding only: its
resampling filters are not reproducible on the phones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_export.errors import UsageError

APP_DIR = "app"
IMAGE_FILE = "image.png"
TENSOR_FILE = "tensor.bin"
DEFAULT_TOP_K = 5
CHANNELS = {"grayscale": 1, "rgb": 3, "bgr": 3}


def resolve(preprocessing: dict[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    """The preprocessing with every default filled in, checked against the input shape.

    Defaults: layout NCHW, colour from the channel count (1 grayscale, 3 rgb),
    image_size from the shape, scale 1, mean 0, std 1, invert false; a one-element
    mean/std applies to every channel.
    """
    layout = preprocessing.get("layout", "NCHW")
    if layout == "none":
        raise UsageError("preprocessing layout is 'none': the input is not an image")
    if layout not in ("NCHW", "NHWC"):
        raise UsageError(f"unknown preprocessing layout {layout!r}")
    dims = list(shape)
    if len(dims) == 4:
        if dims[0] != 1:
            raise UsageError(f"image input shape {dims} must have batch 1")
        dims = dims[1:]
    if len(dims) != 3:
        raise UsageError(f"image input shape {list(shape)} is not [1,]C,H,W or [1,]H,W,C")
    c, h, w = dims if layout == "NCHW" else (dims[2], dims[0], dims[1])
    colour = preprocessing.get("colour", "grayscale" if c == 1 else "rgb")
    if CHANNELS.get(colour) != c:
        raise UsageError(f"colour {colour!r} does not fit {c} channel(s) of shape {list(shape)}")
    size = list(preprocessing.get("image_size", [h, w]))
    if size != [h, w]:
        raise UsageError(f"image_size {size} does not match input shape {list(shape)}")
    mean = _per_channel(preprocessing.get("mean", [0.0]), c, "mean")
    std = _per_channel(preprocessing.get("std", [1.0]), c, "std")
    if any(s == 0 for s in std):
        raise UsageError("preprocessing std has a zero")
    return {"layout": layout, "colour": colour, "image_size": [h, w],
            "scale": float(preprocessing.get("scale", 1.0)), "mean": mean, "std": std,
            "invert": bool(preprocessing.get("invert", False))}


def _per_channel(values: Sequence[float], channels: int, what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise UsageError(f"preprocessing {what} has {len(values)} values for {channels} channels")
    return values


def _numerators(image: Image.Image, colour: str) -> tuple[list[np.ndarray], int]:
    """Integer planes N (int64) and one denominator D: the channel value is N / D.

    Alpha is composited over white (N = c*a + 255*(255-a), D = 255); grayscale is
    N = 299*R + 587*G + 114*B with D multiplied by 1000. Keeping integers until
    the one division makes the result exact and order-independent.
    """
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int64)
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    denom = 1
    if not np.all(alpha == 255):
        rgb, denom = rgb * alpha + 255 * (255 - alpha), 255
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if colour == "grayscale":
        return [299 * r + 587 * g + 114 * b], denom * 1000
    return ([r, g, b] if colour == "rgb" else [b, g, r]), denom


def span(i: int, src: int, dst: int) -> tuple[int, int]:
    """Source index range [start, end) averaged into output index i (area; nearest upscaling)."""
    start = (i * src) // dst
    return start, max((i + 1) * src // dst, start + 1)


def area_resize(plane: np.ndarray, denom: int, out_h: int, out_w: int) -> np.ndarray:
    """Area average of the integer plane, as float64: sum(N) / (count * denom)."""
    src_h, src_w = plane.shape
    prefix = np.zeros((src_h + 1, src_w + 1), dtype=np.int64)
    prefix[1:, 1:] = plane.cumsum(0).cumsum(1)
    out = np.empty((out_h, out_w), dtype=np.float64)
    for i in range(out_h):
        r0, r1 = span(i, src_h, out_h)
        for j in range(out_w):
            c0, c1 = span(j, src_w, out_w)
            total = prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0]
            out[i, j] = float(total) / float((r1 - r0) * (c1 - c0) * denom)
    return out


def image_to_tensor(image: Image.Image, preprocessing: dict, shape: list[int]) -> np.ndarray:
    """The float32 model input for ``image`` (shape exactly ``shape``)."""
    spec = resolve(preprocessing, shape)
    planes, denom = _numerators(image, spec["colour"])
    h, w = spec["image_size"]
    channels = []
    for c, plane in enumerate(planes):
        x = area_resize(plane, denom, h, w)
        if spec["invert"]:
            x = 255.0 - x
        channels.append((x * spec["scale"] - spec["mean"][c]) / spec["std"][c])
    chw = np.stack(channels)
    out = chw if spec["layout"] == "NCHW" else chw.transpose(1, 2, 0)
    return out.astype(np.float32).reshape(shape)


def top_k(scores: Sequence[float] | np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k highest (index, score) pairs, highest first; equal scores by lower index first."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    return [(i, float(flat[i])) for i in order[: max(0, k)]]


def write_app_vectors(golden_dir: Path, preprocessing: dict, input_shape: list[int],
                      predict: Callable[[np.ndarray], np.ndarray], image: Image.Image,
                      k: int = DEFAULT_TOP_K) -> dict:
    """Write the app check vectors under ``golden_dir/app`` and return the manifest entry.

    The image is stored as an opaque 8-bit RGB PNG (no colour profile) so that every
    platform decodes the same pixel values.
    """
    app_dir = Path(golden_dir) / APP_DIR
    app_dir.mkdir(parents=True, exist_ok=True)
    flat = Image.new("RGBA", image.size, "white")
    flat.alpha_composite(image.convert("RGBA"))
    flat.convert("RGB").save(app_dir / IMAGE_FILE, format="PNG")
    # Preprocess what was written (after the PNG round trip), as the apps will.
    with Image.open(app_dir / IMAGE_FILE) as stored:
        tensor = image_to_tensor(stored, preprocessing, input_shape)
    (app_dir / TENSOR_FILE).write_bytes(tensor.astype("<f4").tobytes())
    scores = np.asarray(predict(tensor))
    prefix = f"{Path(golden_dir).name}/{APP_DIR}"
    entry = {"image": f"{prefix}/{IMAGE_FILE}", "tensor": f"{prefix}/{TENSOR_FILE}",
             "top_k": [[i, s] for i, s in top_k(scores, min(k, scores.size))]}
    json.dumps(entry, allow_nan=False)  # fail here, not in the manifest writer
    return entry
