"""The app preprocessing spec (docs/app-spec.md), checked against independent computations."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from PIL import Image

from edge_export.errors import UsageError
from edge_export.package.preprocess import image_to_tensor, top_k, write_app_vectors
from edge_export.release.bundle import _validator

DIGITS = {"layout": "NCHW", "colour": "grayscale", "image_size": [8, 8], "scale": 16 / 255,
          "mean": [0.0], "std": [1.0], "invert": True}


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a.reshape(h // k, k, w // k, k, *a.shape[2:]).mean(axis=(1, 3))


def test_digit_drawing_maps_to_sklearn_range() -> None:
    """Black ink on white, 64x64 -> 8x8 blocks, inverted, 0..16 like sklearn digits."""
    px = np.full((64, 64), 255, np.uint8)
    px[8:56, 24:32] = 0  # a vertical bar filling block column 3: the "1"
    t = image_to_tensor(Image.fromarray(px, "L"), DIGITS, [1, 1, 8, 8])
    expected = (255.0 - _block_mean(px.astype(np.float64), 8)) * 16 / 255
    assert t.shape == (1, 1, 8, 8) and t.dtype == np.float32
    np.testing.assert_array_equal(t[0, 0], expected.astype(np.float32))
    assert t.max() == 16.0 and t.min() == 0.0


def test_rgb_nhwc_mean_std_and_bgr() -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    spec = {"layout": "NHWC", "colour": "rgb", "image_size": [3, 2], "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    t = image_to_tensor(Image.fromarray(px, "RGB"), spec, [1, 3, 2, 3])
    x = _block_mean(px.astype(np.float64), 2)
    expected = (x * (1 / 255) - np.array(spec["mean"])) / np.array(spec["std"])
    np.testing.assert_allclose(t[0], expected, rtol=0, atol=1e-6)
    bgr = image_to_tensor(Image.fromarray(px, "RGB"), {**spec, "colour": "bgr",
                                                       "layout": "NCHW"}, [1, 3, 3, 2])
    np.testing.assert_allclose(bgr[0, 0], (x[..., 2] / 255 - 0.485) / 0.229, atol=1e-6)


def test_grayscale_weights_alpha_over_white_and_defaults() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [10, 200, 30]
    rgba[..., 3] = [[255, 0], [128, 255]]
    t = image_to_tensor(Image.fromarray(rgba, "RGBA"), {}, [1, 1, 2, 2])  # all defaults
    c = rgba[..., :3].astype(np.float64)
    a = rgba[..., 3:4].astype(np.float64)
    flat = (c * a + 255 * (255 - a)) / 255
    gray = (0.299 * flat[..., 0] + 0.587 * flat[..., 1] + 0.114 * flat[..., 2])
    np.testing.assert_allclose(t[0, 0], gray, atol=1e-4)
    assert t[0, 0, 0, 1] == pytest.approx(255.0)  # fully transparent -> white


def test_non_integer_ratio_and_upscaling_use_the_documented_spans() -> None:
    px = np.arange(5 * 5, dtype=np.uint8).reshape(5, 5)
    t = image_to_tensor(Image.fromarray(px, "L"), {}, [1, 1, 2, 2])
    # rows/cols 0..1 and 2..4 (floor(i*5/2) .. floor((i+1)*5/2) - 1)
    assert t[0, 0, 0, 0] == pytest.approx(px[0:2, 0:2].mean())
    assert t[0, 0, 1, 1] == pytest.approx(px[2:5, 2:5].mean())
    up = image_to_tensor(Image.fromarray(px[:2, :2], "L"), {}, [1, 1, 4, 4])
    np.testing.assert_array_equal(up[0, 0], np.repeat(np.repeat(px[:2, :2], 2, 0), 2, 1))


@pytest.mark.parametrize(("prep", "shape"), [
    ({"layout": "none"}, [1, 8]),
    ({"colour": "rgb"}, [1, 1, 8, 8]),
    ({"image_size": [4, 4]}, [1, 1, 8, 8]),
    ({"mean": [0, 0]}, [1, 3, 8, 8]),
    ({"std": [0]}, [1, 1, 8, 8]),
    ({}, [2, 1, 8, 8]),
])
def test_inconsistent_specs_are_usage_errors(prep, shape) -> None:
    with pytest.raises(UsageError):
        image_to_tensor(Image.new("L", (8, 8)), prep, shape)


def test_top_k_orders_by_score_then_index() -> None:
    assert top_k([0.1, 0.5, 0.5, 0.9, -1.0], 3) == [(3, 0.9), (1, 0.5), (2, 0.5)]
    assert top_k(np.array([[2.0, 2.0, 2.0]]), 2) == [(0, 2.0), (1, 2.0)]
    assert top_k([1.0], 5) == [(0, 1.0)]
    assert top_k([1.0, 2.0], 0) == []


def test_write_app_vectors(tmp_path) -> None:
    golden = tmp_path / "golden"
    px = np.full((32, 32), 255, np.uint8)
    px[4:28, 14:18] = 0
    weights = np.random.default_rng(1).normal(size=(64, 10)).astype(np.float32)

    def predict(x: np.ndarray) -> np.ndarray:
        assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32
        return x.reshape(1, 64) @ weights

    entry = write_app_vectors(golden, DIGITS, [1, 1, 8, 8], predict, Image.fromarray(px, "L"))
    assert entry["image"] == "golden/app/image.png" and entry["tensor"] == "golden/app/tensor.bin"
    with Image.open(tmp_path / entry["image"]) as img:
        assert img.mode == "RGB" and img.size == (32, 32)
        stored = image_to_tensor(img, DIGITS, [1, 1, 8, 8])
    tensor = np.frombuffer((tmp_path / entry["tensor"]).read_bytes(), "<f4").reshape(1, 1, 8, 8)
    np.testing.assert_array_equal(tensor, stored)
    scores = predict(tensor).ravel()
    assert [i for i, _ in entry["top_k"]] == list(np.argsort(-scores, kind="stable")[:5])
    json.dumps(entry, allow_nan=False)
    schema = _validator().schema["properties"]["app_vectors"]
    jsonschema.validate(entry, schema)
