"""Re-publishing a fast-path hit (``edge_export.build.fastpath``) from the caches.

Each package's artifact comes from the content cache, checked against its recorded sha256
through the file-hash cache (so a 90 MB artifact the cache wrote is not read again while its
inode, size and mtime are unchanged); it is hard-linked into the package (an ``.mlpackage``
file by file), every other file is re-hashed against the manifest, and the zip is checked
like the artifact. A package already in place under ``--out`` (its files the cache's own)
is left as it is.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from edge_export.package.hashing import file_sha256

if TYPE_CHECKING:
    from edge_export.build.fastpath import FileHashes


def remember_artifact(root: Path, package: dict, hashes: FileHashes) -> None:
    """Record the hashes of the content cache's copy of a package's artifact, file by file,
    from the manifest (the entry was stored with the same artifact sha256), so that a hit
    checks a 90 MB artifact by (inode, size, mtime) instead of reading it again."""
    from edge_export.build.cache import Cache

    artifact = Cache(root).artifact_of(package["job_key"])
    manifest = package["manifest"]
    if artifact is None or not artifact.exists():
        return
    for f in _artifact_files(manifest):
        inner = Path(f["path"]).relative_to(manifest["artifact"]["path"])
        hashes.remember(artifact / inner if inner.parts else artifact, f["sha256"])


def _artifact_files(manifest: dict) -> list[dict]:
    """The manifest's file entries that are the artifact (a file, or an .mlpackage's files)."""
    art = manifest["artifact"]["path"]
    return [f for f in manifest["files"] if f["path"] == art or f["path"].startswith(art + "/")]


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _link_or_copy(src: Path | str, dest: Path | str) -> None:
    """Hard link where possible (a directory file by file): lookups check cached files by
    (inode, size, mtime), so a published copy edited in place is detected there, never reused."""
    if os.path.isdir(src):
        shutil.copytree(src, dest, copy_function=_link_or_copy)
        return
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _verified(root: Path, package: dict, hashes: FileHashes) -> Any | None:
    """The content cache's entry for the package, its artifact checked (by cached hashes)
    to be the one the manifest describes."""
    from edge_export.build.cache import Cache

    hit = Cache(root).lookup(package["job_key"], digest=hashes.artifact_sha256)
    return hit if hit is not None and hit.sha256 == package["manifest"]["artifact"]["sha256"] else None


def _other_files_match(folder: Path, manifest: dict) -> bool:
    """Every file but the artifact (small: goldens, metadata) matches its manifest hash."""
    artifact = {f["path"] for f in _artifact_files(manifest)}
    return all(file_sha256(folder / f["path"]) == f["sha256"] for f in manifest["files"]
               if f["path"] not in artifact)


def _in_place(dest: Path, entry: Path, i: int, package: dict, hit: Any) -> bool:
    """True when ``dest`` already is this package: its manifest and file list as stored, its
    artifact and zip hard links to the verified cache files, its other files matching their
    hashes. Re-publishing it would only unlink and re-link the same files."""
    from edge_export.package.manifest import MANIFEST

    manifest = package["manifest"]
    stored = entry / str(i) / "package"
    try:
        if (dest / MANIFEST).read_bytes() != (stored / MANIFEST).read_bytes():
            return False
        present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    except OSError:
        return False
    if present != {f["path"] for f in manifest["files"]} | {MANIFEST}:
        return False
    art = manifest["artifact"]["path"]
    for f in _artifact_files(manifest):
        inner = Path(f["path"]).relative_to(art)
        if not _same_file(dest / f["path"], hit.artifact / inner if inner.parts else hit.artifact):
            return False
    name = package["zip"]["name"]
    return _same_file(dest.parent / name, entry / str(i) / name) and _other_files_match(dest, manifest)


def _stage(entry: Path, i: int, package: dict, hit: Any, staging: Path,
           hashes: FileHashes) -> Path | None:
    """Rebuild one package (and its zip beside it) in ``staging``; None if anything differs."""
    manifest = package["manifest"]
    staged = staging / f"{package['target']}-{package['recipe']}"
    shutil.copytree(entry / str(i) / "package", staged)
    _link_or_copy(hit.artifact, staged / manifest["artifact"]["path"])
    if not _other_files_match(staged, manifest):  # the artifact: checked by the lookup
        return None
    # The zip is checked like the model's weights files, by hash cached on (inode, size,
    # mtime): a second full read of ~the artifact's bytes was half of a warm re-run.
    cached_zip = entry / str(i) / package["zip"]["name"]
    if hashes.sha256(cached_zip) != package["zip"]["sha256"]:
        return None
    _link_or_copy(cached_zip, staging / cached_zip.name)
    return staged


def republish(opts: Any, root: Path, entry: Path, meta: dict, skipped: list,
               hashes: FileHashes) -> Any | None:
    from edge_export.build.job import JobResult
    from edge_export.build.pipeline import RunReport
    from edge_export.package.manifest import check_replaceable, package_dir, publish, publish_lock, staging_root

    start = time.monotonic()
    staging = staging_root(opts.out)
    try:
        packages = meta["packages"]
        model = SimpleNamespace(**meta["model"])
        dests = [package_dir(opts.out, model.name, model.version, p["target"], p["recipe"])
                 for p in packages]

        def prepare(i: int) -> tuple[bool, Path | None]:  # (already in place, staged folder)
            hit = _verified(root, packages[i], hashes)
            if hit is None:
                return False, None
            if _in_place(dests[i], entry, i, packages[i], hit):
                return True, None
            return False, _stage(entry, i, packages[i], hit, staging, hashes)

        with ThreadPoolExecutor(max_workers=max(1, min(len(packages), os.cpu_count() or 1))) as pool:
            ready = list(pool.map(prepare, range(len(packages))))
        if any(not done and folder is None for done, folder in ready):
            return None
        cached = round(time.monotonic() - start, 3)
        report = RunReport(skipped=skipped, allow_unverified=opts.allow_unverified)
        with publish_lock(opts.out):
            for (done, _), dest in zip(ready, dests, strict=True):  # all checked before any is replaced
                if not done:
                    check_replaceable(dest, model, opts.force)
            for package, (done, folder), dest in zip(packages, ready, dests, strict=True):
                if not done:
                    publish(folder, dest)
                    os.replace(staging / package["zip"]["name"], dest.parent / package["zip"]["name"])
                report.published[(package["target"], package["recipe"])] = dest
        timings = {"cached": cached, "package": round(time.monotonic() - start - cached, 3)}
        report.results = [JobResult(p["target"], p["recipe"], p["status"], manifest=p["manifest"],
                                    parity=p["parity"], latency=p["latency"], timings=dict(timings))
                          for p in packages]
        return report
    except (OSError, KeyError, TypeError, ValueError):
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
