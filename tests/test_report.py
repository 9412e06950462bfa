"""report.html: one self-contained page, one error histogram per package."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from tests.test_verify import shared_tflite_export


@pytest.fixture(scope="session")
def tflite_export(tmp_path_factory):
    return shared_tflite_export(tmp_path_factory)


def package_sections(page: str) -> list[str]:
    return re.findall(r"<section class='package'>(.*?)</section>", page, flags=re.S)


@pytest.mark.slow
def test_export_report_is_self_contained_with_one_image_per_package(tflite_export):
    _, report, data = tflite_export
    page = report.read_text()
    assert len(data["packages"]) == 1
    sections = package_sections(page)
    assert len(sections) == 1
    section = sections[0]
    assert "digits 0.1.0 tflite/fp32" in section
    assert section.count("<img ") == 1
    # parity metrics against the recipe's thresholds, and host latency and accuracy
    assert "snr_db" in section and "≥ 60" in section and "cosine" in section and "≥ 0.9999" in section
    assert "host latency" in section and "accuracy float" in section
    # every image is inline PNG; nothing is fetched from elsewhere
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) >= 3  # histogram, sizes, accuracy, latency
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).format == "PNG"
    assert "http" not in page.replace("http-equiv", "")
