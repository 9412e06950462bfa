"""Fuzz the parsers of untrusted files: whatever the structure, they raise the project's own
error type (a one-line message, exit 2), never an unexpected exception."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_export.errors import PackageError, UsageError
from edge_export.package.manifest import validate_manifest
from edge_export.quant.recipe import Recipe, parse_recipe
from edge_export.release.bundle import check_integrity

from .test_bundle import make_package

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=20)


# --- manifests ----------------------------------------------------------------------------

@FUZZ
@given(json_values)
def test_validate_manifest_raises_only_package_error(value):
    with contextlib.suppress(PackageError):
        validate_manifest(value)


MANIFEST_KEYS = ("schema_version", "name", "target", "artifact", "files", "golden", "inputs", "outputs",
                 "labels", "parity", "recipe", "app_vectors", "path", "sha256", "bytes", "samples")


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (dict keys and list indexes)."""
    found = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


_TEMPLATE: dict[str, Any] = {}


def _template() -> tuple[Path, dict[str, Any]]:
    """One schema-valid package (fake artifact, correct hashes), made once."""
    if not _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="edge-export-fuzz-"))
        pkg = make_package(root, target="tflite")
        _TEMPLATE.update(pkg=pkg, manifest=json.loads((pkg / "manifest.json").read_text()))
    return _TEMPLATE["pkg"], _TEMPLATE["manifest"]


@FUZZ
@given(st.data(), json_values | st.sampled_from(MANIFEST_KEYS) | st.sampled_from(["../x", "/etc/passwd", ""]))
def test_integrity_check_of_a_mutated_manifest_raises_only_package_error(data, new):
    template, manifest = _template()
    manifest = json.loads(json.dumps(manifest))
    path = data.draw(st.sampled_from(_paths(manifest)), label="path")
    mutated = _replace(manifest, path, new)
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "pkg"
        shutil.copytree(template, pkg)
        (pkg / "manifest.json").write_text(json.dumps(mutated, allow_nan=True))
        with contextlib.suppress(PackageError):
            check_integrity(pkg)


@FUZZ
@given(st.binary(max_size=200) | text.map(str.encode))
def test_integrity_check_of_arbitrary_manifest_bytes_raises_only_package_error(raw):
    template, _ = _template()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "pkg"
        shutil.copytree(template, pkg)
        (pkg / "manifest.json").write_bytes(raw)
        with contextlib.suppress(PackageError):
            check_integrity(pkg)


# --- recipes ------------------------------------------------------------------------------

RECIPE_KEYS = ("name", "target", "summary", "unsupported", "quantize", "scheme", "bits", "activations",
               "granularity", "block_size", "symmetric", "observer", "percentile", "keep_float", "bias_correction",
               "calibration", "required", "samples", "parity", "fidelity", "cosine", "snr_db",
               "top1_agreement", "max_abs", "accuracy", "max_drop", "deployment", "minimum")
keys = st.sampled_from(RECIPE_KEYS) | text
toml_scalars = st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | text | st.sampled_from(
    ["fp32", "tflite", "int8", "static", "per-channel", "minmax"])
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)
toml_tables = st.recursive(st.dictionaries(keys, toml_values, max_size=5),
                           lambda inner: st.dictionaries(keys, toml_values | inner, max_size=5), max_leaves=15)


def toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") if not math.isfinite(value) \
            else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_scalar(v) for v in value) + "]"
    return json.dumps(value).replace("\x7f", "\\u007f")  # a TOML basic string


def to_toml(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """Valid TOML for a dict of scalars, arrays and nested tables (no TOML writer needed)."""
    lines = [f"{json.dumps(k)} = {toml_scalar(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            name = ".".join(json.dumps(k) for k in (*prefix, key))
            lines += ["", f"[{name}]", to_toml(value, (*prefix, key))]
    return "\n".join(lines)


@FUZZ
@given(toml_tables)
def test_parse_recipe_of_random_toml_raises_only_usage_error(table):
    text_ = to_toml(table)
    try:
        recipe = parse_recipe(text_, "fuzz.toml")
    except UsageError:
        return
    assert isinstance(recipe, Recipe)


@FUZZ
@given(st.fixed_dictionaries({"name": st.just("mine"), "target": st.just("tflite"), "summary": text},
                             optional={"quantize": toml_tables, "calibration": toml_tables, "parity": toml_tables,
                                       "fidelity": toml_tables, "accuracy": toml_tables, "deployment": toml_tables,
                                       "unsupported": text}))
def test_parse_recipe_of_nearly_valid_recipes_raises_only_usage_error(table):
    with contextlib.suppress(UsageError):
        parse_recipe(to_toml(table), "fuzz.toml")


@FUZZ
@given(st.text(max_size=200))
def test_parse_recipe_of_arbitrary_text_raises_only_usage_error(raw):
    with contextlib.suppress(UsageError):
        parse_recipe(raw, "fuzz.toml")
