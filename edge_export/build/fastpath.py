"""The warm re-run fast path: re-publish an unchanged model's packages without torch.

The content cache (``edge_export.build.cache``) keys a job on the exported graph and weights,
which takes importing torch, running the user's code and ``torch.export`` to compute:
seconds before anything is reused. This layer sits in front of it. Its key is computed
from files and options alone:

- the command line (spec, targets and recipe hashes, name, version, inputs, gates,
  sample counts, ``--threads``) and the working directory;
- the data files (``--validation/calibration/eval-data``) by content;
- edge-export's own source hash and the installed distributions with their versions
  (the ``*.dist-info`` names on ``sys.path``: read from directory listings, no import);
- the files the model's loading *read*: every user module it imported and every file it
  opened (weights, configs), recorded with an audit hook during the slow run, plus the
  weight-like files beside them (native readers such as safetensors open files without
  Python's ``open``). They are stored with the entry and re-hashed on lookup.

File hashes are cached by (path, size, mtime), so a big weights file is read once, not
on every run (a file modified within the last two seconds is never cached: its mtime may
not have moved yet). A hit re-publishes the stored packages: each artifact comes from
the content cache, whose lookup re-checks its sha256, every other file is checked
against its manifest hash and the zip against its recorded hash. Anything missing or
changed is a miss, and the run takes the slow path, whose keys stay the authority.

Not covered (documented limits): a model whose build is random without a seed (the
slow path would produce other weights each run; this path reuses the first), and
inputs the model reads from the environment or the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import site
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_export.build.republish import remember_artifact, republish
from edge_export.package.hashing import file_sha256

FORMAT = 1
RACY_SECONDS = 2.0  # a file this fresh may change again without its mtime moving
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".npy", ".pt2",
                   ".onnx", ".h5", ".gguf", ".msgpack")


# --- file hashes, cached by (path, size, mtime) -------------------------------------

class FileHashes:
    def __init__(self, root: Path) -> None:
        self.path = root / "filehashes.json"
        try:
            self._known: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._known = {}
        self._dirty = False

    def sha256(self, path: Path | str) -> str | None:
        """The file's sha256, or None when it is not a readable regular file."""
        path = os.path.realpath(path)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not os.path.isfile(path):
            return None
        known = self._known.get(path)
        if known and known[:2] == [st.st_size, st.st_mtime_ns] and known[3:] == [st.st_ino]:
            return known[2]
        try:
            digest = file_sha256(Path(path))
        except OSError:
            return None
        if time.time() - st.st_mtime > RACY_SECONDS:
            self._known[path] = [st.st_size, st.st_mtime_ns, digest, st.st_ino]
            self._dirty = True
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """Record the hash of a file this process has just written itself (and never
        modifies): the racy-mtime rule is for files others may still be writing."""
        st = os.stat(path)
        self._known[os.path.realpath(path)] = [st.st_size, st.st_mtime_ns, digest, st.st_ino]
        self._dirty = True

    def tree_sha256(self, path: Path) -> str | None:
        """A file's hash, or a directory's as its sorted (relative path, hash) list (the
        digest ``edge_export.package.hashing.artifact_sha256`` computes)."""
        if not path.is_dir():
            return self.sha256(path)
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path).as_posix()}\0{self.sha256(item)}\n".encode())
        return digest.hexdigest()

    def artifact_sha256(self, path: Path) -> tuple[str, int] | None:
        """(sha256, bytes) as ``artifact_sha256`` gives them, from the cached file hashes."""
        files = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
        digest = self.tree_sha256(path)
        return None if digest is None else (digest, sum(p.stat().st_size for p in files))

    def save(self) -> None:
        if not self._dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._known))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)


# --- the key ---------------------------------------------------------------------------

def installed_distributions() -> list[str]:
    """Every installed distribution with its version, from the metadata directory names
    on sys.path (``torch-2.13.0.dist-info``): a directory listing, no import."""
    names = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            names += [n for n in os.listdir(entry or ".")
                      if n.endswith((".dist-info", ".egg-info", ".egg-link"))]
    return sorted(set(names))


NOT_IN_KEY = frozenset({"out", "jobs", "debug", "quiet", "force", "cache_dir", "targets", "recipes",
                        "validation_data", "calibration_data", "eval_data"})


def fast_key(opts: Any, plan: list, hashes: FileHashes) -> str:
    from edge_export import __version__
    from edge_export.build.cache import source_sha256

    def data(path: Path | None) -> str | None:
        return None if path is None else hashes.tree_sha256(Path(path))

    # Every option that can change a package, whatever options are added later: all fields
    # but those that only say where and how the run happens (data files enter by content).
    options = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name not in NOT_IN_KEY}
    parts = {
        "format": FORMAT, "cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH", ""),
        "plan": [[t, r.name, r.sha256] for t, r in plan], "options": options,
        "data": [data(opts.validation_data), data(opts.calibration_data), data(opts.eval_data)],
        "tools": {"edge-export": __version__, "source": source_sha256(),
                  "python": sys.version, "platform": sys.platform,
                  "distributions": installed_distributions()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --- recording what loading the model read ---------------------------------------------

_recording: list[set[str]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _recording and isinstance(args[0], (str, bytes, os.PathLike)):
        mode = args[1]
        if mode is None or (isinstance(mode, str) and not set(mode) & set("wax+")):
            _recording[-1].add(os.fsdecode(args[0]))


_hooked = False


@contextlib.contextmanager
def recording() -> Iterator[set[str]]:
    """Collect the files read (Python ``open``) and the modules imported inside the block."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # hooks cannot be removed: it records only while active
        _hooked = True
    before = set(sys.modules)
    opened: set[str] = set()
    _recording.append(opened)
    try:
        yield opened
    finally:
        _recording.pop()
        for name in set(sys.modules) - before:
            path = getattr(sys.modules.get(name), "__file__", None)
            if path:
                opened.add(path)


def dependencies(read: set[str], exclude: list[Path]) -> list[str]:
    """The user's files among those read: outside the interpreter, its site-packages and
    edge-export itself (versioned in the key), plus weight-like files beside each."""
    import edge_export
    import edge_export.exporters

    system = [sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(),
              site.getusersitepackages(), "/proc", "/sys", "/dev", "/etc",
              os.path.dirname(edge_export.__file__), os.path.dirname(edge_export.exporters.__file__),
              *map(str, exclude)]
    roots = tuple(os.path.join(os.path.realpath(p), "") for p in system if p)
    kept: set[str] = set()
    for raw in read:
        path = os.path.realpath(raw)
        if path.startswith(roots) or "__pycache__" in path or not os.path.isfile(path):
            continue
        kept.add(path)
        with contextlib.suppress(OSError):
            folder = os.path.dirname(path)
            kept.update(os.path.join(folder, n) for n in os.listdir(folder)
                        if n.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(folder, n)))
    return sorted(kept)


# --- entries ----------------------------------------------------------------------------

def _entry_dir(root: Path, key: str) -> Path:
    return root / "fast" / key[:2] / key


def store(root: Path, key: str, deps: list[str], hashes: FileHashes, model: Any,
          jobs: list, report: Any) -> None:
    """Record a run whose every package passed (best effort, like the content cache)."""
    from edge_export.package.archive import zip_name

    if report.exit_code != 0 or any(j.cache_key is None for j in jobs):
        return
    tmp = root / "tmp" / f"fast-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        dep_hashes = {p: hashes.sha256(p) for p in deps}
        if None in dep_hashes.values():
            return
        packages = []
        for i, (job, result) in enumerate(zip(jobs, report.results, strict=True)):
            dest = report.published[job.key]
            manifest = result.manifest
            zip_path = dest.parent / zip_name(model.name, model.version, job.target,
                                              job.recipe.name)
            keep = tmp / str(i)
            shutil.copytree(dest, keep / "package",
                            ignore=lambda d, names, art=manifest["artifact"]["path"], top=dest:
                            [art] if Path(d) == top else [])
            shutil.copyfile(zip_path, keep / zip_path.name)
            zip_sha = file_sha256(keep / zip_path.name)
            packages.append({"target": job.target, "recipe": job.recipe.name,
                             "job_key": job.cache_key, "status": result.status,
                             "parity": result.parity, "latency": result.latency,
                             "manifest": manifest, "zip": {"name": zip_path.name,
                                                           "sha256": zip_sha}})
        meta = {"key": key, "deps": dep_hashes, "packages": packages,
                "model": {"name": model.name, "version": model.version,
                          "weights_sha256": model.weights_sha256, "graph_sha256": model.graph_sha256}}
        (tmp / "entry.json").write_text(json.dumps(meta, sort_keys=True) + "\n")
        entry = _entry_dir(root, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(entry, ignore_errors=True)
        os.rename(tmp, entry)
        for i, package in enumerate(packages):  # renames keep the mtime the hash was taken at
            zip_path = entry / str(i) / package["zip"]["name"]
            hashes.remember(zip_path, package["zip"]["sha256"])
            remember_artifact(root, package, hashes)
    except (OSError, KeyError, TypeError):
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        hashes.save()


def attempt(opts: Any, plan: list, skipped: list) -> tuple[Any | None, str, FileHashes]:
    """(the run's report, or None on a miss; the fast key; the file-hash cache)."""
    root = Path(opts.cache_dir)
    hashes = FileHashes(root)
    key = fast_key(opts, plan, hashes)
    entry = _entry_dir(root, key)
    try:
        meta = json.loads((entry / "entry.json").read_text())
    except (OSError, ValueError):
        return None, key, hashes
    if meta.get("key") != key or any(hashes.sha256(p) != h for p, h in meta["deps"].items()):
        hashes.save()
        return None, key, hashes
    report = republish(opts, root, entry, meta, skipped, hashes)
    hashes.save()
    return report, key, hashes
