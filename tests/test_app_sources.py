"""Contract tests for the demo apps' sources, without an Android SDK or Xcode.

The apps can only be built on a developer machine, so these tests check what can be
checked here: every Kotlin/Swift file parses (tree-sitter), and the JSON keys, dtypes,
byte order and runtimes the app code reads agree with the manifest schema and with
what ``edge_export.release.bundle`` writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from edge_export.release.bundle import APPS, INDEX_ENTRY_KEYS

tree_sitter = pytest.importorskip("tree_sitter")
tree_sitter_kotlin = pytest.importorskip("tree_sitter_kotlin")
tree_sitter_swift = pytest.importorskip("tree_sitter_swift")

REPO = Path(__file__).resolve().parents[1]
KOTLIN_SRC = REPO / "android_demo/app/src/main/java/org/edgeexport/demo"
SWIFT_SRC = REPO / "ios_demo/EdgeExportDemo"
# Kotlin files that read manifest.json (directly or the preprocessing object) and index.json.
KOTLIN_MANIFEST_READERS = ["ModelPackage.kt", "Preprocess.kt"]
SWIFT_MANIFEST_READERS = ["ModelPackage.swift"]
# LLM packages: the manifest (llm-manifest.schema.json) and the golden prompt files, whose keys
# tests/test_llm_ios.py checks against a real package.
SWIFT_LLM_MANIFEST_READERS = ["LLMPackage.swift"]
SWIFT_LLM_GOLDEN_READERS = ["LLMSelfTest.swift"]
INDEX_KEYS = {"index_version", "models", *INDEX_ENTRY_KEYS}
# org.json accessors whose first argument is a key.
JSON_ACCESSOR = re.compile(r"^(get|opt)([A-Z]\w*)?$|^(has|isNull)$")


@cache
def language(ext: str):
    module = tree_sitter_swift if ext == ".swift" else tree_sitter_kotlin
    return tree_sitter.Language(module.language())


def parse(path: Path):
    return tree_sitter.Parser(language(path.suffix)).parse(path.read_bytes()).root_node


def walk(node) -> Iterator:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node) -> str:
    return node.text.decode()


def string_value(node) -> str | None:
    """The content of a plain string literal node (Kotlin or Swift), else None."""
    if node.type not in ("string_literal", "line_string_literal"):
        return None
    parts = [c for c in node.children if c.type not in ('"',)]
    if any(c.type not in ("string_content", "line_str_text") for c in parts):
        return None  # interpolated
    return "".join(text(c) for c in parts)


@cache
def schema(name: str = "manifest.schema.json") -> dict:
    return json.loads(resources.files("edge_export").joinpath(f"schemas/{name}").read_text())


def schema_property_names(name: str = "manifest.schema.json") -> set[str]:
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema(name))
    return names


def app_sources() -> list[Path]:
    return sorted(p for root in ("android_demo", "ios_demo") for p in (REPO / root).rglob("*")
                  if p.suffix in (".kt", ".kts", ".swift") and "build" not in p.parts)


# --- every source file parses --------------------------------------------------------------

def test_there_are_app_sources() -> None:
    exts = {p.suffix for p in app_sources()}
    assert exts == {".kt", ".kts", ".swift"}


@pytest.mark.parametrize("path", app_sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_source_parses_without_errors(path: Path) -> None:
    bad = [f"{n.start_point[0] + 1}:{n.start_point[1] + 1} {'missing' if n.is_missing else 'error'} "
           f"{text(n)[:40]!r}" for n in walk(parse(path)) if n.is_error or n.is_missing]
    assert not bad, f"{path.name}: {bad[:5]}"


# --- JSON keys the apps read ---------------------------------------------------------------

def kotlin_json_keys(path: Path) -> set[str]:
    """First string arguments of org.json accessor calls: json.getString("key"), optJSONObject…"""
    keys = set()
    for node in walk(parse(path)):
        if node.type != "call_expression" or len(node.children) < 2:
            continue
        callee, args = node.children[0], node.children[-1]
        if callee.type != "navigation_expression" or args.type != "value_arguments":
            continue
        if not JSON_ACCESSOR.match(text(callee.children[-1])):
            continue
        first = next((a for a in args.children if a.type == "value_argument"), None)
        value = string_value(first.children[0]) if first is not None else None
        if value is not None:
            keys.add(value)
    return keys


def swift_json_keys(path: Path) -> set[str]:
    """Keys of Decodable types: CodingKeys raw values (or case names), else stored properties."""
    keys = set()
    for decl in walk(parse(path)):
        if decl.type != "class_declaration":
            continue
        inherits = {text(c) for c in decl.children if c.type == "inheritance_specifier"}
        if not inherits & {"Decodable", "Codable"}:
            continue
        body = next(c for c in decl.children if c.type in ("class_body", "enum_class_body"))
        coding = [c for c in body.children if c.type == "class_declaration"
                  and any(text(n) == "CodingKeys" for n in c.children if n.type == "type_identifier")]
        if coding:
            keys |= swift_coding_keys(coding[0])
        elif decl.children[0].type == "struct":
            keys |= {text(p.child_by_field_name("name") or p.children[1])
                     for p in body.children if p.type == "property_declaration"
                     and not any(c.type == "computed_property" for c in p.children)}
    return keys


def swift_coding_keys(enum_decl) -> set[str]:
    keys = set()
    body = next(c for c in enum_decl.children if c.type == "enum_class_body")
    for entry in (c for c in body.children if c.type == "enum_entry"):
        pending = None
        for child in entry.children:
            if child.type == "simple_identifier":
                if pending is not None:
                    keys.add(pending)
                pending = text(child)
            elif string_value(child) is not None:
                keys.add(string_value(child))
                pending = None
        if pending is not None:
            keys.add(pending)
    return keys


def test_kotlin_manifest_keys_exist_in_the_schema() -> None:
    keys = set().union(*(kotlin_json_keys(KOTLIN_SRC / f) for f in KOTLIN_MANIFEST_READERS))
    # The extraction must see the reads, or the test proves nothing.
    assert {"artifact", "golden", "samples", "thresholds", "snr_db", "app_vectors", "top_k",
            "image_size", "invert", "dtype", "shape"} <= keys
    assert keys - schema_property_names() == set()


def test_swift_manifest_keys_exist_in_the_schema() -> None:
    keys = set().union(*(swift_json_keys(SWIFT_SRC / f) for f in SWIFT_MANIFEST_READERS))
    assert {"artifact", "golden", "samples", "thresholds", "snr_db", "app_vectors", "top_k",
            "image_size", "invert", "dtype", "shape"} <= keys
    assert keys - schema_property_names() == set()


def test_swift_llm_manifest_keys_exist_in_the_llm_schema() -> None:
    keys = set().union(*(swift_json_keys(SWIFT_SRC / f) for f in SWIFT_LLM_MANIFEST_READERS))
    assert {"kind", "artifact", "tokenizer", "generation", "golden", "eos_token_ids", "max_seq_len"} <= keys
    assert keys - schema_property_names("llm-manifest.schema.json") == set()


# android LLM packages: the manifest (llm-manifest.schema.json) and the golden prompt files
# (golden/prompt_NNN.json: prompt text and ids, the artifact's greedy continuation, PyTorch's).
KOTLIN_LLM_READERS = ["LlmPackage.kt", "LlmViewModel.kt"]
LLM_GOLDEN_KEYS = {"prompt", "prompt_ids", "continuation_ids", "continuation_text", "pytorch_ids"}
# What ExecuTorch's LLM runner reports in LlmCallback.onStats (its Stats JSON), not a package file.
RUNNER_STATS_KEYS = {"num_prompt_tokens", "num_generated_tokens", "inference_start_ms", "prompt_eval_end_ms",
                     "inference_end_ms"}


def test_kotlin_llm_keys_exist_in_the_llm_schema_or_golden_files() -> None:
    keys = set().union(*(kotlin_json_keys(KOTLIN_SRC / f) for f in KOTLIN_LLM_READERS))
    assert {"kind", "artifact", "tokenizer", "generation", "max_context", "eos_token_ids", "golden",
            "continuation_text", "prompt_ids"} <= keys
    assert keys - schema_property_names("llm-manifest.schema.json") - LLM_GOLDEN_KEYS - RUNNER_STATS_KEYS == set()


def test_no_other_app_file_reads_manifest_keys_directly() -> None:
    """Manifest parsing stays in the files checked above (index parsing in ModelIndex)."""
    readers = {*KOTLIN_MANIFEST_READERS, *KOTLIN_LLM_READERS, "ModelIndex.kt"}
    for path in KOTLIN_SRC.glob("*.kt"):
        if path.name not in readers:
            assert kotlin_json_keys(path) == set(), path.name
    for path in SWIFT_SRC.glob("*.swift"):
        if path.name not in {*SWIFT_MANIFEST_READERS, *SWIFT_LLM_MANIFEST_READERS, *SWIFT_LLM_GOLDEN_READERS,
                             "ModelIndex.swift"}:
            assert swift_json_keys(path) == set(), path.name


def test_index_keys_match_what_bundle_writes() -> None:
    kotlin = kotlin_json_keys(KOTLIN_SRC / "ModelIndex.kt")
    swift = swift_json_keys(SWIFT_SRC / "ModelIndex.swift")
    assert "models" in kotlin and "models" in swift
    assert kotlin <= INDEX_KEYS and swift <= INDEX_KEYS
    assert kotlin - {"models"} == set(INDEX_ENTRY_KEYS) == swift - {"models"}


def test_schema_property_names_used_by_apps_are_where_the_apps_expect() -> None:
    props = schema()["properties"]
    assert set(props["preprocessing"]["properties"]) == {
        "layout", "colour", "image_size", "scale", "mean", "std", "invert"}
    assert set(schema()["$defs"]["thresholds"]["properties"]) == {
        "cosine", "snr_db", "top1_agreement", "max_abs"}
    assert "app_vectors" in props and props["runtime"]["required"] == ["runtime"]


# --- golden tensor conventions -------------------------------------------------------------

def schema_dtypes() -> list[str]:
    return schema()["$defs"]["tensor"]["properties"]["dtype"]["enum"]


def kotlin_dtypes() -> dict[str, int]:
    tree = parse(KOTLIN_SRC / "HostTensor.kt")
    out = {}
    for entry in (n for n in walk(tree) if n.type == "enum_entry"):
        args = [a.children[0] for a in walk(entry) if a.type == "value_argument"]
        out[string_value(args[0])] = int(text(args[1]))
    return out


def swift_dtypes() -> dict[str, int]:
    source = (SWIFT_SRC / "HostTensor.swift").read_text()
    tree = parse(SWIFT_SRC / "HostTensor.swift")
    enum = next(n for n in walk(tree) if n.type == "class_declaration"
                and any(text(c) == "DType" for c in n.children if c.type == "type_identifier"))
    names = swift_coding_keys(enum)
    sizes = {}
    for cases, size in re.findall(r"case ((?:\.\w+,?\s*)+):\s*return (\d+)", source):
        for name in re.findall(r"\.(\w+)", cases):
            sizes[name] = int(size)
    assert set(sizes) == names
    return sizes


@pytest.mark.parametrize("dtypes", [kotlin_dtypes, swift_dtypes], ids=["kotlin", "swift"])
def test_apps_read_every_schema_dtype_with_numpy_sizes(dtypes) -> None:
    found = dtypes()
    assert sorted(found) == sorted(schema_dtypes())
    assert found == {name: np.dtype(name).itemsize for name in schema_dtypes()}


def test_golden_files_are_little_endian_everywhere() -> None:
    golden = schema()["properties"]["golden"]
    assert golden["properties"]["byte_order"] == {"const": "little"}
    assert "golden" in golden["required"] or "byte_order" in golden["required"]
    assert "ByteOrder.LITTLE_ENDIAN" in (KOTLIN_SRC / "HostTensor.kt").read_text()
    swift = (SWIFT_SRC / "HostTensor.swift").read_text()
    assert "littleEndian:" in swift and ".bigEndian" not in swift


def test_apps_take_golden_paths_from_the_manifest() -> None:
    """golden/sample_NNN/<name>.bin is the pipeline's layout; apps must not rebuild it."""
    for path in [*KOTLIN_SRC.glob("*.kt"), *SWIFT_SRC.glob("*.swift")]:
        assert "sample_" not in path.read_text(), path.name
    sample = schema()["properties"]["golden"]["properties"]["samples"]["items"]
    assert sample["properties"]["inputs"]["additionalProperties"] == {"type": "string"}


# --- runtimes ------------------------------------------------------------------------------

def test_kotlin_runner_registry_matches_bundle() -> None:
    tree = parse(KOTLIN_SRC / "Runner.kt")
    keys = {string_value(n.children[0]) for n in walk(tree)
            if n.type == "infix_expression" and text(n.children[1]) == "to"}
    assert keys == set(APPS["android"].runtimes)


def test_swift_runner_registry_matches_bundle() -> None:
    tree = parse(SWIFT_SRC / "Runner.swift")
    keys = {string_value(n.children[1]) for n in walk(tree) if n.type == "dictionary_literal"}
    assert keys == set(APPS["ios"].runtimes)
