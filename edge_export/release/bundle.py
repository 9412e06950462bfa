"""Copy verified model packages into the demo apps and rewrite the apps' model index.

The apps read ``index.json`` and each package's ``manifest.json`` at run time, so
bundling is the only coupling between a package and an app: what lands here must be
exactly what the manifest describes (hash-checked), in the folder the app's build
packages (Gradle's default ``src/main/assets``; the iOS project's Models folder
reference).

LLM packages (``kind: "llm"``) go to the folder the app's text-generation screen lists
(one folder per package, no index: the screen reads every manifest there), and only to
an app whose screen runs that target's artifact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from edge_export.errors import EXIT_GATE_FAILED, PackageError, UsageError
from edge_export.package.hashing import artifact_sha256

MANIFEST = "manifest.json"
INDEX = "index.json"
INDEX_VERSION = 1
INDEX_ENTRY_KEYS = ("name", "version", "target", "recipe", "path", "runtime")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_STALE = (".tmp-", ".old-")


@dataclass(frozen=True)
class AppLayout:
    """Where an app takes its models from and what it can run."""

    models_dir: PurePosixPath  # relative to apps_root
    targets: frozenset[str]
    runtimes: frozenset[str]
    llm_dir: PurePosixPath  # LLM packages, relative to apps_root
    llm_targets: frozenset[str]  # what the text-generation screen runs


APPS: dict[str, AppLayout] = {
    "android": AppLayout(PurePosixPath("android_demo/app/src/main/assets/models"),
                         frozenset({"android", "tflite"}), frozenset({"executorch", "litert"}),
                         PurePosixPath("android_demo/app/src/main/assets/llm"), frozenset({"android"})),
    "ios": AppLayout(PurePosixPath("ios_demo/EdgeExportDemo/Resources/Models"),
                     frozenset({"ios"}), frozenset({"coreml"}),
                     PurePosixPath("ios_demo/EdgeExportDemo/Resources/Models/LLM"), frozenset({"ios"})),
}


@cache
def _validator(schema: str = "schemas/manifest.schema.json") -> Any:
    import jsonschema

    text = resources.files("edge_export").joinpath(schema).read_text()
    return jsonschema.Draft202012Validator(json.loads(text))


class TamperedFile(PackageError):
    """A file whose bytes differ from its manifest entry: the package does not verify (exit 1)."""

    exit_code = EXIT_GATE_FAILED


def _safe_relpath(package_dir: Path, rel: str, what: str) -> Path:
    """``package_dir/rel`` for a relative path that stays inside the package (no symlinks)."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise PackageError(f"{package_dir}: {what} path {rel!r} leaves the package")
    path = package_dir.joinpath(*pure.parts)
    probe = path
    while probe != package_dir:
        if probe.is_symlink():
            raise PackageError(f"{package_dir}: {what} {rel!r} is a symlink")
        probe = probe.parent
    return path


def check_integrity(package_dir: Path) -> dict:
    """The parsed manifest of a package whose files all match their recorded hashes.

    Also refuses a manifest that points at files it does not list (artifact, golden
    tensors, labels, app vectors): the app would fail on them at run time.
    """
    package_dir = Path(package_dir)
    manifest_path = package_dir / MANIFEST
    if not manifest_path.is_file():
        raise PackageError(f"{package_dir}: no {MANIFEST} (not a model package)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{manifest_path}: not valid JSON ({exc})") from None
    llm = is_llm_manifest(manifest)
    validator = _validator("schemas/llm-manifest.schema.json") if llm else _validator()
    error = next(iter(sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PackageError(f"{manifest_path}: schema violation at {where}: {error.message}")

    listed: dict[str, dict] = {}
    for entry in manifest["files"]:
        rel = entry["path"]
        if rel in listed or rel == MANIFEST:
            raise PackageError(f"{manifest_path}: files lists {rel!r} twice or lists itself")
        listed[rel] = entry
        path = _safe_relpath(package_dir, rel, "file")
        if not path.exists():
            raise PackageError(f"{package_dir}: listed file {rel!r} is missing")
        _check_hash(package_dir, rel, path, entry["sha256"], entry["bytes"])

    artifact = manifest["artifact"]
    path = _safe_relpath(package_dir, artifact["path"], "artifact")
    if not path.exists():
        raise PackageError(f"{package_dir}: artifact {artifact['path']!r} is missing")
    _check_hash(package_dir, artifact["path"], path, artifact["sha256"], artifact["bytes"])

    for rel in referenced_files(manifest):
        if rel != artifact["path"] and rel not in listed:
            raise PackageError(f"{manifest_path}: {rel!r} is used but not listed in files")
    return manifest


def referenced_files(manifest: dict) -> list[str]:
    """Relative paths the apps open besides the manifest and the artifact."""
    if is_llm_manifest(manifest):  # golden prompts, tokenizer, generation config
        return [g["path"] for g in manifest["golden"]] + [manifest["tokenizer"]["path"],
                                                          manifest["generation"]["path"]]
    refs = [p for sample in manifest["golden"]["samples"]
            for group in ("inputs", "outputs") for p in sample[group].values()]
    if manifest.get("labels"):
        refs.append(manifest["labels"]["file"])
    vectors = manifest.get("app_vectors")
    if vectors:
        refs += [vectors["image"], vectors["tensor"]]
    return refs


def _check_hash(package_dir: Path, rel: str, path: Path, sha256: str, size: int) -> None:
    actual, actual_size = artifact_sha256(path)
    if actual != sha256 or actual_size != size:
        raise TamperedFile(f"{package_dir}: {rel!r} does not match its manifest hash "
                           f"(tampered or partly copied)")


def bundle(app: str, packages: list[Path], apps_root: Path) -> list[Path]:
    """Copy each package into ``app``'s models folder; return the bundled directories.

    Every package is checked before anything is copied, so a refused package leaves
    the app as it was. Each copy replaces the previous one by rename.
    """
    if app not in APPS:
        raise UsageError(f"unknown app {app!r}", hint=f"choose from {', '.join(sorted(APPS))}")
    layout = APPS[app]
    models_dir = Path(apps_root).joinpath(*layout.models_dir.parts)
    if not models_dir.parent.is_dir():
        raise UsageError(f"{models_dir.parent} does not exist",
                         hint="pass the repository root that holds android_demo/ and ios_demo/")

    llm_dir = Path(apps_root).joinpath(*layout.llm_dir.parts)
    planned: dict[Path, tuple[Path, dict]] = {}
    for package in packages:
        package = Path(package)
        manifest = check_integrity(package)
        _check_fits(app, layout, package, manifest)
        if is_llm_manifest(manifest):
            dest = llm_dir / f"{manifest['name']}-{_package_slug(manifest)}"
        else:
            dest = models_dir / manifest["name"] / _package_slug(manifest)
        if dest in planned:
            raise UsageError(f"{package} and {planned[dest][0]} both bundle to {dest}")
        planned[dest] = (package, manifest)

    for dest, (package, manifest) in planned.items():
        _install(package, manifest, dest)
    write_index(models_dir)
    return list(planned)


def _package_slug(manifest: dict) -> str:
    return f"{manifest['target']}-{manifest['recipe']['name']}"


def is_llm_manifest(manifest: Any) -> bool:
    """An LLM package's manifest (``kind: "llm"``, llm-manifest.schema.json)."""
    return isinstance(manifest, dict) and manifest.get("kind") == "llm"


def _check_fits(app: str, layout: AppLayout, package: Path, manifest: dict) -> None:
    for value in (manifest["name"], manifest["target"], manifest["recipe"]["name"]):
        if not _SAFE_SEGMENT.match(value):
            raise PackageError(f"{package}: {value!r} cannot be used as a folder name")
    if is_llm_manifest(manifest):
        if manifest["target"] not in layout.llm_targets:
            raise PackageError(f"{package}: the {app} app's text generation does not run "
                               f"{manifest['target']} LLM packages",
                               hint=f"it runs {', '.join(sorted(layout.llm_targets))} LLM packages")
        return
    if manifest["target"] not in layout.targets:
        raise PackageError(f"{package}: a {manifest['target']} package cannot go in the {app} app",
                           hint=f"the {app} app takes {', '.join(sorted(layout.targets))}")
    runtime = manifest["runtime"]["runtime"]
    if runtime not in layout.runtimes:
        raise PackageError(f"{package}: the {app} app has no {runtime!r} runtime")


def _install(package: Path, manifest: dict, dest: Path) -> None:
    """Copy the manifest and the files it lists beside ``dest``, then swap it in by rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*"):
        if any(marker in stale.name for marker in _STALE):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        rels = [MANIFEST, manifest["artifact"]["path"], *(f["path"] for f in manifest["files"])]
        for rel in dict.fromkeys(rels):
            src, out = package / rel, tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, out, dirs_exist_ok=True)
            else:
                shutil.copy2(src, out)
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def index_entries(models_dir: Path) -> list[dict[str, str]]:
    """One entry per bundled package found under ``models_dir``, sorted."""
    entries = []
    for manifest_path in sorted(models_dir.glob(f"*/*/{MANIFEST}")):
        if manifest_path.parent.name.startswith("."):
            continue
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if is_llm_manifest(manifest):  # listed by the text-generation screen, not the model index
            continue
        entries.append({
            "name": manifest["name"], "version": manifest["version"],
            "target": manifest["target"], "recipe": manifest["recipe"]["name"],
            "path": manifest_path.parent.relative_to(models_dir).as_posix(),
            "runtime": manifest["runtime"]["runtime"],
        })
    return sorted(entries, key=lambda e: (e["name"], e["target"], e["recipe"], e["path"]))


def write_index(models_dir: Path) -> Path:
    """Rewrite ``index.json`` from what is bundled (atomic; byte-identical for the same set)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    index = {"index_version": INDEX_VERSION, "models": index_entries(models_dir)}
    path = models_dir / INDEX
    tmp = path.with_name(f".{INDEX}.tmp")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
