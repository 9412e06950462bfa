"""Content cache of lowered artifacts and their verification results.

An entry is keyed by everything that can change the artifact or its parity, accuracy
and latency results: the model (weights hash, exported-graph hash, input specs, output
names and kinds, labels, preprocessing, compression: see ``model_key``), the target, the
recipe (its file's sha256 and parameters), the gates, the data (parity, calibration and
evaluation arrays), and the versions of the toolchain, the runtime, Python and
edge-export's own source. A re-run with the same key copies the
artifact and reuses the results; only the package is rebuilt.

Every entry records the sha256 of its artifact and of its results; a lookup that
finds either changed deletes the entry and reports a miss, so a damaged entry is
rebuilt, never used. Entries are written to a temporary directory and renamed into
place, so a crash leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edge_export import __version__
from edge_export.package.hashing import artifact_sha256

FORMAT = 2  # 2: the model part holds every ModelInfo field (model_key)
ENTRY = "entry.json"


def default_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("edge-export"))


def arrays_sha256(arrays: dict[str, Any]) -> str:
    """Hash of named arrays (names, dtypes, shapes, bytes): .npz files embed timestamps."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@cache
def source_sha256() -> str:
    """Hash of edge-export's own Python sources: a code change invalidates the cache
    even while the version number stays the same."""
    import edge_export
    import edge_export.exporters

    digest = hashlib.sha256()
    for package in (edge_export, edge_export.exporters):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ModelInfo fields that only say where the model came from or what its package is called:
# the artifact and its results never contain them (the package around them is rebuilt on
# every run), and the model itself enters the key by its weights and exported graph.
MODEL_NOT_IN_KEY = frozenset({"spec", "trust_pickle", "input_overrides", "name", "version"})


def model_key(model: Any) -> dict[str, Any]:
    """Every field of the model's ``ModelInfo`` but those of ``MODEL_NOT_IN_KEY``: output
    names and kinds (which decide the top-1 gate), labels, preprocessing, compression, input
    specs, hashes — and whatever field is added later, unless it is excluded there on purpose."""
    import dataclasses

    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in MODEL_NOT_IN_KEY}


def job_key(job: Any, exporter: Any, inputs_sha256: dict[str, str]) -> str:
    """The cache key of one (target, recipe) job; ``inputs_sha256`` holds the graph and
    data hashes computed by the export stage."""
    parts = {
        "format": FORMAT,
        "model": {**model_key(job.model), **inputs_sha256},
        "target": job.target,
        "recipe": job.recipe.to_json(),
        "gates": {"max_accuracy_drop": job.max_accuracy_drop, "inputs": job.parity_inputs_from},
        "latency": {"threads": job.threads},
        "tools": {**exporter.tool_versions(), "runtime": exporter.runtime_requirements(job.recipe),
                  "edge-export": __version__, "edge-export-source": source_sha256(),
                  "python": sys.version.split()[0], "platform": sys.platform},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=_jsonable).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    """Key parts that JSON cannot encode as they are: dataclasses (TensorSpec, DynamicDim) by
    their fields, anything else by its text."""
    import dataclasses

    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)


def _results_sha256(results: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Hit:
    artifact: Path
    results: dict[str, Any]  # parity, latency, accuracy as the job computed them
    sha256: str = ""  # the artifact's, as checked by the lookup


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / key

    def contains(self, key: str) -> bool:
        """Cheap existence check (``lookup`` verifies the content)."""
        return (self._entry(key) / ENTRY).is_file()

    def lookup(self, key: str,
               digest: Callable[[Path], tuple[str, int] | None] = artifact_sha256) -> Hit | None:
        """The entry, its artifact re-checked against its recorded (sha256, bytes) by
        ``digest`` (default: read and hash it; the fast path passes hashes cached by
        (inode, size, mtime))."""
        entry = self._entry(key)
        try:
            meta = json.loads((entry / ENTRY).read_text())
            artifact = entry / meta["artifact"]["path"]
            intact = (meta["key"] == key
                      and _results_sha256(meta["results"]) == meta["results_sha256"]
                      and artifact.exists()
                      and digest(artifact) == (meta["artifact"]["sha256"],
                                               meta["artifact"]["bytes"]))
        except (OSError, ValueError, KeyError, TypeError):
            intact = False
        if intact:
            return Hit(artifact, meta["results"], meta["artifact"]["sha256"])
        shutil.rmtree(entry, ignore_errors=True)
        return None

    def artifact_of(self, key: str) -> Path | None:
        """Where an entry keeps its artifact (not checked: ``lookup`` checks)."""
        try:
            meta = json.loads((self._entry(key) / ENTRY).read_text())
            return self._entry(key) / meta["artifact"]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, key: str, artifact: Path, results: dict[str, Any]) -> None:
        """Best effort: a cache that cannot be written never fails the export."""
        entry = self._entry(key)
        tmp = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        try:
            tmp.mkdir(parents=True)
            _copy(artifact, tmp / artifact.name)
            sha, size = artifact_sha256(tmp / artifact.name)
            meta = {"key": key, "artifact": {"path": artifact.name, "sha256": sha, "bytes": size},
                    "results": results, "results_sha256": _results_sha256(results)}
            (tmp / ENTRY).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            entry.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(entry, ignore_errors=True)  # a damaged entry being rebuilt
            os.rename(tmp, entry)
        except OSError:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- hints: which jobs a run will probably find cached, known before the export ---

    def _hint(self, hint: str) -> Path:
        return self.root / "hints" / f"{hint}.json"

    def predicts_hit(self, hint: str) -> bool:
        try:
            key = json.loads(self._hint(hint).read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return self.contains(key)

    def remember(self, hint: str, key: str) -> None:
        try:
            self._hint(hint).parent.mkdir(parents=True, exist_ok=True)
            self._hint(hint).write_text(json.dumps({"key": key}) + "\n")
        except OSError:
            pass


def hint_of(model_spec: str, target: str, recipe_sha256: str) -> str:
    """A guess at a job's identity before the model is loaded (spec file's path, size and
    mtime). Only decides whether workers start early; correctness rests on the key."""
    path = Path(model_spec.rsplit(":", 1)[0] if ":" in model_spec else model_spec)
    try:
        stat = path.stat()
        where = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    except OSError:
        where = [model_spec, os.getcwd()]
    return hashlib.sha256(json.dumps([where, model_spec, target, recipe_sha256]).encode()).hexdigest()


def restore(hit: Hit, dest: Path) -> None:
    _copy(hit.artifact, dest)


def _copy(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)
