"""LLM packages: artifact, tokenizer, generation config, golden prompt/continuation
files, parity.json and a manifest validated against ``schemas/llm-manifest.schema.json``.

Hashing and atomic publication are the vision packages' own (``edge_export.package.manifest``).
"""

from __future__ import annotations

import json
import shutil
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from edge_export.errors import PackageError
from edge_export.package.manifest import MANIFEST, SCHEMA_VERSION, write_manifest

GENERATION = "generation_config.json"
TOKENIZER = "tokenizer.json"
# What an app samples with unless told otherwise: greedy, as the golden files were made.
SAMPLING_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 64}


def write_generation_config(pkg: Path, generation: dict[str, Any], chat_template: str | None) -> None:
    config = {**{k: v for k, v in generation.items() if k != "path"}, "chat_template": chat_template,
              "sampling": SAMPLING_DEFAULTS}
    (pkg / GENERATION).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_golden(pkg: Path, goldens: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One JSON per golden prompt: text, ids, and the continuation the app must reproduce."""
    (pkg / "golden").mkdir()
    entries = []
    for i, golden in enumerate(goldens):
        rel = f"golden/prompt_{i:03d}.json"
        (pkg / rel).write_text(json.dumps(golden, indent=2) + "\n")
        entries.append({"path": rel})
    return entries


def copy_tokenizer(pkg: Path, tokenizer_json: Path) -> dict[str, str]:
    shutil.copyfile(tokenizer_json, pkg / TOKENIZER)
    return {"path": TOKENIZER, "format": "huggingface-tokenizers"}


def finish_manifest(pkg: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash everything, validate against the LLM schema, and write manifest.json."""
    manifest.update(schema_version=SCHEMA_VERSION, kind="llm")
    return write_manifest(pkg, manifest, validate=validate_llm_manifest)


@cache
def llm_schema() -> dict[str, Any]:
    return json.loads(resources.files("edge_export").joinpath("schemas/llm-manifest.schema.json").read_text())


def validate_llm_manifest(manifest: Any) -> None:
    import jsonschema

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(llm_schema()).iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PackageError(f"LLM manifest does not match the schema at {where}: {error.message[:200]}")


def read_llm_package(pkg: Path) -> dict[str, Any]:
    """The validated manifest of an LLM package directory."""
    path = pkg / MANIFEST
    if not path.is_file():
        raise PackageError(f"{pkg} is not a package: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != "llm":
        raise PackageError(f"{pkg} is not an LLM package (manifest kind is not 'llm')",
                           hint="use `edge-export verify` for model packages")
    validate_llm_manifest(manifest)
    return manifest
