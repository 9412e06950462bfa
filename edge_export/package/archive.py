"""Package archives: deterministic zips out, and zips read without trusting them.

A package zip depends only on the package's bytes: entries sorted, every timestamp
``SOURCE_DATE_EPOCH`` (else a constant), every file mode 0644, each entry deflated or
stored as its own bytes decide (``compression_for``), so two builds of the same package
give the same zip. Reading checks every entry before
anything is written: no absolute paths, ``..``, symlinks or special files, and a bound
on the bytes written (counted while inflating, not taken from the headers).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from edge_export.errors import PackageError, UnsafeInputError

DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip can store
FILE_MODE = 0o100644
MAX_EXTRACT_BYTES = 4 << 30
MAX_ENTRIES = 100_000
_CHUNK = 1 << 20
STORE_ABOVE_RATIO = 0.8  # a file whose first MiB deflates to more than this is stored


def zip_name(name: str, version: str, target: str, recipe: str) -> str:
    return f"{name}-{version}-{target}-{recipe}.zip"


def _timestamp() -> tuple[int, int, int, int, int, int]:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    epoch = int(raw) if raw.isdigit() else DEFAULT_EPOCH
    return time.gmtime(max(epoch, DEFAULT_EPOCH))[:6]


def compression_for(path: Path) -> int:
    """Deflate what deflate shrinks; store what it does not. Model weights in float or int8
    deflate by a few percent at a cost of ~1 s per 25 MB (a 90 MB model's three packages spent
    12 s of a 26 s export in zlib). Decided from the file's first MiB at deflate's fastest
    level, so the choice depends only on the bytes and the zip stays deterministic."""
    with open(path, "rb") as src:
        head = src.read(_CHUNK)
    if len(head) < _CHUNK:
        return zipfile.ZIP_DEFLATED
    return zipfile.ZIP_DEFLATED if len(zlib.compress(head, 1)) < STORE_ABOVE_RATIO * len(head) \
        else zipfile.ZIP_STORED


def write_zip(package: Path, dest: Path) -> Path:
    """Zip ``package`` under a top folder named like the zip; written beside ``dest``
    and renamed into place, so a reader never sees half a zip."""
    root = PurePosixPath(dest.name.removesuffix(".zip"))
    files = sorted((p.relative_to(package).as_posix(), p) for p in package.rglob("*") if p.is_file())
    stamp = _timestamp()
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for rel, path in files:
                info = zipfile.ZipInfo(str(root / rel), date_time=stamp)
                info.create_system = 3  # unix, so external_attr carries the mode
                info.external_attr = FILE_MODE << 16
                info.compress_type = compression_for(path)
                with open(path, "rb") as src, zf.open(info, "w") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _checked_name(zip_path: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    pure = PurePosixPath(name)
    if (not name or "\\" in name or "\0" in name or pure.is_absolute()
            or (len(name) > 1 and name[1] == ":") or ".." in pure.parts):
        raise UnsafeInputError(f"{zip_path}: entry {name!r} would be written outside the "
                               "extraction directory")
    ftype = stat.S_IFMT(info.external_attr >> 16)
    if info.create_system == 3 and ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "a symlink" if ftype == stat.S_IFLNK else "not a regular file"
        raise UnsafeInputError(f"{zip_path}: entry {name!r} is {kind}")
    return pure


def extract_zip(zip_path: Path, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Extract into the (new or empty) directory ``dest``; every entry is checked first."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{zip_path}: not a readable zip ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise UnsafeInputError(f"{zip_path}: {len(infos)} entries (limit {MAX_ENTRIES})")
        seen: set[str] = set()
        declared = 0
        for info in infos:
            pure = _checked_name(zip_path, info)
            key = pure.as_posix().rstrip("/")
            if key in seen:
                raise UnsafeInputError(f"{zip_path}: entry {info.filename!r} appears twice")
            seen.add(key)
            declared += info.file_size
        if declared > max_bytes:
            raise UnsafeInputError(f"{zip_path}: extracts to {declared:,} bytes, over the "
                                   f"{max_bytes:,}-byte limit")
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            _extract_checked(zip_path, zf, infos, dest, max_bytes)
        except BaseException:
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def _extract_checked(zip_path: Path, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path,
                     max_bytes: int) -> None:
    written = 0
    for info in infos:
        target = dest.joinpath(*PurePosixPath(info.filename).parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise UnsafeInputError(f"{zip_path}: inflates past the "
                                               f"{max_bytes:,}-byte limit")
                    out.write(chunk)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise PackageError(f"{zip_path}: entry {info.filename!r} is corrupt ({exc})") from None
