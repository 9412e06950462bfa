"""``edge-export verify``: is this package exactly what was published, and does it still
run to its golden outputs on the host runtime of its target?

Integrity (schema, every file's sha256 and size) is ``bundle.check_integrity``, shared
with the apps' bundling; this module adds zip reading and the golden re-run, which the
report reuses to plot errors.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.capture import toolchain_output
from edge_export.build.exporter import Runner, RuntimeUnavailable, ToolchainMissing, get_exporter
from edge_export.errors import GateFailed, PackageError
from edge_export.package.archive import MAX_EXTRACT_BYTES, extract_zip
from edge_export.package.manifest import read_golden_tensor
from edge_export.quant.recipe import Thresholds
from edge_export.release.bundle import MANIFEST, check_integrity, is_llm_manifest
from edge_export.verify.parity import ParityResult, gate


@dataclass
class GoldenRun:
    """A package's golden inputs run on the host runtime of its target."""

    runtime: str
    names: list[str]
    reference: list[list[np.ndarray]]  # per sample, per output (the golden outputs)
    actual: list[list[np.ndarray]]
    inputs: list[list[np.ndarray]]
    run: Runner


@dataclass
class Verified:
    package: Path
    manifest: dict[str, Any]
    parity: ParityResult


@contextlib.contextmanager
def opened(package: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> Iterator[Path]:
    """The package directory of ``package`` (a directory, or a zip extracted safely to a
    temporary directory that is removed afterwards)."""
    package = Path(package)
    if package.is_dir():
        yield package
        return
    if not package.is_file():
        raise PackageError(f"{package} does not exist")
    if package.suffix != ".zip":
        raise PackageError(f"{package} is neither a package directory nor a .zip")
    with tempfile.TemporaryDirectory(prefix="edge-export-verify-") as tmp:
        root = extract_zip(package, Path(tmp), max_bytes)
        yield _package_root(package, root)


def _package_root(zip_path: Path, root: Path) -> Path:
    if (root / MANIFEST).is_file():
        return root
    tops = list(root.iterdir())
    if len(tops) == 1 and (tops[0] / MANIFEST).is_file():
        return tops[0]
    raise PackageError(f"{zip_path}: no {MANIFEST} at its top level (not a model package)")


def run_golden(package: Path, manifest: dict[str, Any], threads: int = 1) -> GoldenRun:
    """Raises RuntimeUnavailable when the host cannot run the artifact."""
    exporter = get_exporter(manifest["target"])
    with toolchain_output(Path(os.devnull)):  # runtimes' banners are not the user's business
        runtime, run = exporter.load_runtime(package / manifest["artifact"]["path"],
                                             threads=threads)
    specs = {t["name"]: t for t in (*manifest["inputs"], *manifest["outputs"])}
    in_names = [t["name"] for t in manifest["inputs"]]
    out_names = [t["name"] for t in manifest["outputs"]]

    def tensor(rel: str, name: str) -> np.ndarray:
        spec = specs[name]
        try:
            return read_golden_tensor(package, rel, spec["dtype"], spec["shape"])
        except ValueError as exc:
            raise PackageError(f"{package}: golden tensor {rel!r} does not have the shape "
                               f"{spec['shape']} the manifest gives {name!r}") from exc

    inputs, reference, actual = [], [], []
    for sample in manifest["golden"]["samples"]:
        if set(sample["inputs"]) != set(in_names) or set(sample["outputs"]) != set(out_names):
            raise PackageError(f"{package}: a golden sample does not name the manifest's "
                               "inputs and outputs")
        ins = [tensor(sample["inputs"][n], n) for n in in_names]
        inputs.append(ins)
        reference.append([tensor(sample["outputs"][n], n) for n in out_names])
        actual.append([np.asarray(a) for a in run(ins)])
    return GoldenRun(runtime, out_names, reference, actual, inputs, run)


def verify(package: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> Verified:
    """Raise TamperedFile/GateFailed (exit 1) or PackageError/UnsafeInputError (exit 2).

    Integrity never depends on the target's toolchain: without it (a single-target
    install) the schema and hashes are still checked, and parity is ``not-run`` saying
    the golden re-run was skipped and what to install."""
    with opened(package, max_bytes) as folder:
        manifest = check_integrity(folder)
        if is_llm_manifest(manifest):
            from edge_export.llm.generate import regenerate_goldens

            result = regenerate_goldens(folder, manifest)
            if result.status == "failed":
                raise GateFailed(f"{package}: {result.reason}")
            return Verified(Path(package), manifest, result)
        thresholds = Thresholds(**manifest["parity"]["thresholds"])
        try:
            golden = run_golden(folder, manifest)
        except (RuntimeUnavailable, ToolchainMissing) as exc:
            reason = (f"golden re-run skipped: {exc.one_line()}" if isinstance(exc, ToolchainMissing)
                      else str(exc))
            return Verified(Path(package), manifest, ParityResult(
                "not-run", manifest["parity"]["runtime"], reason=reason,
                thresholds=thresholds.to_json(), not_applied=manifest["parity"].get("not_applied", {})))
        kinds = [o.get("kind", "tensor") for o in manifest["outputs"]]
        result = gate(golden.names, golden.reference, golden.actual, thresholds,
                      golden.runtime, "golden outputs", kinds=kinds,
                      real_inputs=manifest["golden"]["inputs_from"] == "validation-data")
    if result.status == "failed":
        raise GateFailed(f"{package}: {result.reason}")
    return Verified(Path(package), manifest, result)
