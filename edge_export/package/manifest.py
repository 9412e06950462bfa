"""Package stage: golden I/O, manifest (validated against the committed JSON Schema)
and atomic publication under ``--out``.

Layout: ``OUT/<name>-<version>/<target>-<recipe>/`` holding the artifact,
``manifest.json``, ``golden/``, ``labels.txt`` and ``parity.json``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_export.errors import PackageError, UsageError
from edge_export.package.hashing import artifact_sha256, file_sha256

if TYPE_CHECKING:  # imported where used: the warm re-run path imports this module
    import numpy as np

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"


def package_dir(out: Path, name: str, version: str, target: str, recipe: str) -> Path:
    return out / f"{name}-{version}" / f"{target}-{recipe}"


def failed_dir(out: Path, name: str, version: str, target: str, recipe: str) -> Path:
    return out / ".failed" / f"{name}-{version}" / f"{target}-{recipe}"


def write_golden(pkg: Path, input_names: list[str], output_names: list[str],
                 inputs: list[tuple[np.ndarray, ...]], outputs: list[list[np.ndarray]]) -> list[dict]:
    """Raw little-endian tensors an app reads without numpy; returns the manifest entries."""
    import numpy as np

    samples = []
    for i, (ins, outs) in enumerate(zip(inputs, outputs, strict=True)):
        folder = pkg / "golden" / f"sample_{i:03d}"
        folder.mkdir(parents=True)
        entry: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {}}
        for kind, names, arrays in (("inputs", input_names, ins), ("outputs", output_names, outs)):
            for name, array in zip(names, arrays, strict=True):
                array = np.asarray(array)
                rel = f"golden/sample_{i:03d}/{name}.bin"
                (pkg / rel).write_bytes(array.astype(array.dtype.newbyteorder("<")).tobytes())
                entry[kind][name] = rel
        samples.append(entry)
    return samples


def read_golden_tensor(pkg: Path, rel: str, dtype: str, shape: list[int]) -> np.ndarray:
    import numpy as np

    return np.fromfile(pkg / rel, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def file_entries(pkg: Path) -> list[dict[str, Any]]:
    """Every file of the package but the manifest itself, sorted, with its hash."""
    return [{"path": p.relative_to(pkg).as_posix(), "sha256": file_sha256(p),
             "bytes": p.stat().st_size}
            for p in sorted(pkg.rglob("*"))
            if p.is_file() and p.relative_to(pkg).as_posix() != MANIFEST]


def write_manifest(pkg: Path, manifest: dict[str, Any],
                   validate: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Hash the artifact and every file, validate (against the model-package schema unless
    another validator is given, e.g. the LLM package's) and write manifest.json."""
    artifact = pkg / manifest["artifact"]["path"]
    sha, size = artifact_sha256(artifact)
    manifest["artifact"].update(sha256=sha, bytes=size)
    manifest["files"] = file_entries(pkg)
    (validate or validate_manifest)(manifest)
    (pkg / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def is_verified(manifest: dict[str, Any]) -> bool:
    """Whether the package's artifact was run on its runtime when it was built: its
    ``verified`` field, or for a manifest written before that field, its parity status."""
    return bool(manifest.get("verified", (manifest.get("parity") or {}).get("status") != "not-run"))


@cache
def manifest_schema() -> dict[str, Any]:
    return json.loads(resources.files("edge_export").joinpath(
        "schemas/manifest.schema.json").read_text())


def validate_manifest(manifest: Any) -> None:
    import jsonschema

    if not isinstance(manifest, dict):
        raise PackageError("manifest is not a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise PackageError(f"manifest schema_version {manifest.get('schema_version')!r} is not "
                           f"supported (this edge-export reads {SCHEMA_VERSION})")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(manifest_schema()).iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PackageError(f"manifest does not match the schema at {where}: {error.message[:200]}")


# --- atomic publication ------------------------------------------------------------

def staging_root(out: Path) -> Path:
    """A private temporary directory under OUT (same filesystem, so renames are atomic)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def clean_leftovers(out: Path) -> list[Path]:
    """Remove temporaries of runs that died (their pid is gone); keep live runs' ones."""
    removed = []
    if not out.is_dir():
        return removed
    # publish's fallback parks a replaced package beside it, one level down
    nested = (e for d in out.iterdir() if d.is_dir() and not d.name.startswith(".") for e in d.iterdir())
    for entry in [*out.iterdir(), *nested]:
        if entry.name.startswith(TMP_PREFIX) and not _pid_alive(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _pid_alive(name: str) -> bool:
    try:
        pid = int(name[len(TMP_PREFIX):].split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def publish_lock(out: Path):
    """Serialise publication into one --out across processes: a package folder and its zip
    are swapped in as a pair, so two concurrent runs never leave one run's folder beside the
    other's zip. The lock is on the directory itself, so it leaves no file behind."""
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock, also when the process dies


def check_replaceable(dest: Path, model: Any, force: bool) -> None:
    """A published name/version/target/recipe is immutable: refuse to put a package of other
    weights or another exported graph in its place, unless the user forces it."""
    try:
        source = json.loads((dest / MANIFEST).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # nothing published there (or not ours): nothing to protect
    same = (source.get("weights_sha256") == model.weights_sha256
            and source.get("graph_sha256", model.graph_sha256) == model.graph_sha256)
    if not same and not force:
        raise UsageError(f"{dest} already holds a different model ({source.get('model')}, weights "
                         f"{str(source.get('weights_sha256'))[:12]}…); a published version is immutable",
                         hint="bump --version, choose another --name, or pass --force to replace it")


def publish(staged: Path, dest: Path) -> None:
    """Put ``staged`` at ``dest``; an existing ``dest`` is swapped out in one step."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            os.rename(staged, dest)
            return
        except OSError:
            if not dest.exists():
                raise
    if _exchange(staged, dest):
        shutil.rmtree(staged)  # now holds the previous package
        return
    old = dest.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-old")
    os.rename(dest, old)
    os.rename(staged, dest)
    shutil.rmtree(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0
