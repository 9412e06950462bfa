"""bundle(): verified packages land where the app builds package them, replaced by rename."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_export.errors import PackageError, UsageError
from edge_export.package.hashing import artifact_sha256
from edge_export.release import bundle as bundle_mod
from edge_export.release.bundle import APPS, INDEX, bundle, check_integrity

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = {"android": ("model.pte", "executorch"), "tflite": ("model.tflite", "litert"),
             "ios": ("model.mlpackage", "coreml")}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_package(root: Path, target: str = "android", recipe: str = "fp32", name: str = "digits",
                 version: str = "0.1.0", payload: bytes = b"fake model") -> Path:
    """A schema-valid package with correct hashes and a fake artifact (no toolchain)."""
    pkg = root / f"{name}-{version}" / f"{target}-{recipe}"
    pkg.mkdir(parents=True)
    artifact_name, runtime = ARTIFACTS[target]
    if target == "ios":  # a directory artifact, hashed like edge_export.package.hashing does
        (pkg / artifact_name / "Data").mkdir(parents=True)
        (pkg / artifact_name / "Data" / "weights.bin").write_bytes(payload)
        (pkg / artifact_name / "Manifest.json").write_text("{}")
    else:
        (pkg / artifact_name).write_bytes(payload)
    art_sha, art_bytes = artifact_sha256(pkg / artifact_name)
    files = {"labels.txt": "".join(f"{i}\n" for i in range(10)).encode(),
             "golden/sample_000/x.bin": np.zeros((1, 1, 8, 8), "<f4").tobytes(),
             "golden/sample_000/logits.bin": np.arange(10, dtype="<f4").tobytes(),
             "parity.json": b"{}\n"}
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    manifest = {
        "schema_version": 1, "name": name, "version": version, "target": target,
        "format": artifact_name.split(".")[-1],
        "recipe": {"name": recipe, "summary": "float", "scheme": "none", "sha256": "0" * 64},
        "artifact": {"path": artifact_name, "sha256": art_sha, "bytes": art_bytes},
        "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 10]}],
        "preprocessing": {"layout": "NCHW", "colour": "grayscale", "image_size": [8, 8],
                          "scale": 16 / 255, "mean": [0.0], "std": [1.0], "invert": True},
        "labels": {"file": "labels.txt", "count": 10},
        "runtime": {"runtime": runtime},
        "tools": {"torch": "2.13.0"},
        "parity": {"status": "passed", "runtime": runtime, "reason": "",
                   "thresholds": {"cosine": 0.999, "snr_db": 30.0, "top1_agreement": 1.0}},
        "golden": {"byte_order": "little", "samples": [
            {"inputs": {"x": "golden/sample_000/x.bin"},
             "outputs": {"logits": "golden/sample_000/logits.bin"}}]},
        "source": {"model": "examples/digits.py:build", "weights_sha256": "1" * 64},
        "files": [{"path": rel, "sha256": _sha(data), "bytes": len(data)}
                  for rel, data in sorted(files.items())],
    }
    (pkg / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return pkg


@pytest.fixture
def apps_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for layout in APPS.values():
        (root / layout.models_dir).parent.mkdir(parents=True)
    return root


def models_dir(apps_root: Path, app: str) -> Path:
    return apps_root / APPS[app].models_dir


def test_android_models_dir_is_the_gradle_assets_dir() -> None:
    gradle = (REPO / "android_demo/app/build.gradle.kts").read_text()
    # The default main assets dir is src/main/assets; the build must not move it.
    assert "assets.srcDirs" not in gradle and "assets.setSrcDirs" not in gradle
    assert APPS["android"].models_dir.as_posix() == "android_demo/app/src/main/assets/models"
    runtime_dirs = (REPO / "android_demo/app/src/main/java/org/edgeexport/demo/ModelIndex.kt")
    assert 'const val ROOT = "models"' in runtime_dirs.read_text()


def test_ios_models_dir_is_a_resource_folder_of_the_app_target() -> None:
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((REPO / "ios_demo/project.yml").read_text())
    sources = spec["targets"]["EdgeExportDemo"]["sources"]
    folders = [s["path"] for s in sources if isinstance(s, dict) and s.get("type") == "folder"]
    rel = APPS["ios"].models_dir.relative_to("ios_demo").as_posix()
    assert rel in folders
    index_swift = (REPO / "ios_demo/EdgeExportDemo/ModelIndex.swift").read_text()
    assert 'forResource: "Models"' in index_swift and rel.endswith("/Models")


@pytest.mark.parametrize(("app", "targets"), [("android", ["android", "tflite"]), ("ios", ["ios"])])
def test_bundle_copies_packages_and_writes_sorted_index(tmp_path, apps_root, app, targets) -> None:
    pkgs = [make_package(tmp_path / "out", target=t) for t in targets]
    pkgs.append(make_package(tmp_path / "out", target=targets[0], name="alpha"))
    dests = bundle(app, list(reversed(pkgs)), apps_root)
    base = models_dir(apps_root, app)
    assert sorted(dests) == sorted(base / m / f"{t}-fp32" for m, t in
                                   [("digits", t) for t in targets] + [("alpha", targets[0])])
    for pkg, dest in zip(reversed(pkgs), dests, strict=True):
        check_integrity(dest)  # the copy verifies on its own
        assert (dest / "labels.txt").read_bytes() == (pkg / "labels.txt").read_bytes()
    index = json.loads((base / INDEX).read_text())
    names = [(e["name"], e["target"]) for e in index["models"]]
    assert names == sorted(names) and names[0][0] == "alpha"
    assert set(index["models"][0]) == set(bundle_mod.INDEX_ENTRY_KEYS)
    assert all((base / e["path"] / "manifest.json").is_file() for e in index["models"])
    first = (base / INDEX).read_bytes()
    bundle(app, pkgs, apps_root)  # same set, other order: same bytes
    assert (base / INDEX).read_bytes() == first


def test_rebundle_replaces_atomically_and_leaves_no_temporaries(tmp_path, apps_root, monkeypatch):
    old = make_package(tmp_path / "v1", payload=b"old weights")
    (dest,) = bundle("android", [old], apps_root)
    (dest / "stray.txt").write_text("from the previous copy")
    new = make_package(tmp_path / "v2", version="0.2.0", payload=b"new weights!")

    renames: list[tuple[str, str]] = []
    real_replace = bundle_mod.os.replace

    def spy(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        # Whenever the destination name is (re)bound, it holds a complete package.
        real_replace(src, dst)
        if Path(dst) == dest:
            check_integrity(dest)

    monkeypatch.setattr(bundle_mod.os, "replace", spy)
    bundle("android", [new], apps_root)
    assert (dest / "model.pte").read_bytes() == b"new weights!"
    assert not (dest / "stray.txt").exists()
    assert any(dst == dest.name and src.startswith(f".{dest.name}.tmp-") for src, dst in renames)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
    index = json.loads((models_dir(apps_root, "android") / INDEX).read_text())
    assert [e["version"] for e in index["models"]] == ["0.2.0"]


def test_failed_copy_keeps_the_previous_package(tmp_path, apps_root, monkeypatch):
    (dest,) = bundle("android", [make_package(tmp_path / "v1", payload=b"old")], apps_root)
    new = make_package(tmp_path / "v2", payload=b"new")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_mod.shutil, "copy2", boom)
    with pytest.raises(OSError):
        bundle("android", [new], apps_root)
    assert (dest / "model.pte").read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


@pytest.mark.parametrize("tamper", ["artifact", "golden", "extra_listed_missing", "manifest_json",
                                    "schema", "unlisted_reference", "escape", "ios_dir"])
def test_tampered_package_is_refused_and_nothing_is_copied(tmp_path, apps_root, tamper):
    target = "ios" if tamper == "ios_dir" else "android"
    good = make_package(tmp_path / "ok", name="good", target=target)
    pkg = make_package(tmp_path / "bad", target=target)
    manifest_path = pkg / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if tamper == "artifact":
        (pkg / "model.pte").write_bytes(b"fake modeL")
    elif tamper == "golden":
        (pkg / "golden/sample_000/logits.bin").write_bytes(np.ones(10, "<f4").tobytes())
    elif tamper == "extra_listed_missing":
        (pkg / "labels.txt").unlink()
    elif tamper == "manifest_json":
        manifest_path.write_text("{not json")
    elif tamper == "schema":
        manifest["schema_version"] = 2
    elif tamper == "unlisted_reference":
        manifest["files"] = [f for f in manifest["files"] if f["path"] != "labels.txt"]
    elif tamper == "escape":
        manifest["files"][0]["path"] = "../../etc/passwd"
    elif tamper == "ios_dir":
        (pkg / "model.mlpackage/Data/weights.bin").write_bytes(b"changed!!!")
    if tamper in ("schema", "unlisted_reference", "escape"):
        manifest_path.write_text(json.dumps(manifest))
    app = "ios" if target == "ios" else "android"
    with pytest.raises(PackageError) as info:
        bundle(app, [good, pkg], apps_root)
    assert "\n" not in info.value.one_line()
    assert not models_dir(apps_root, app).exists()


def test_missing_manifest_is_refused(tmp_path, apps_root):
    pkg = make_package(tmp_path)
    (pkg / "manifest.json").unlink()
    with pytest.raises(PackageError, match="no manifest.json"):
        bundle("android", [pkg], apps_root)


@pytest.mark.parametrize(("app", "target"), [("ios", "android"), ("ios", "tflite"),
                                             ("android", "ios")])
def test_wrong_target_for_app_is_refused(tmp_path, apps_root, app, target):
    with pytest.raises(PackageError, match=f"a {target} package cannot go in the {app} app"):
        bundle(app, [make_package(tmp_path, target=target)], apps_root)


def test_unknown_app_and_unknown_runtime_are_refused(tmp_path, apps_root):
    with pytest.raises(UsageError, match="unknown app"):
        bundle("windows", [make_package(tmp_path)], apps_root)
    pkg = make_package(tmp_path / "rt")
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["runtime"]["runtime"] = "onnxruntime"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="no 'onnxruntime' runtime"):
        bundle("android", [pkg], apps_root)


def test_two_packages_for_one_destination_are_refused(tmp_path, apps_root):
    a = make_package(tmp_path / "a")
    b = make_package(tmp_path / "b", version="0.2.0")
    with pytest.raises(UsageError, match="both bundle to"):
        bundle("android", [a, b], apps_root)


def test_unsafe_recipe_name_is_refused(tmp_path, apps_root):
    pkg = make_package(tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["recipe"]["name"] = "../x"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="folder name"):
        bundle("android", [pkg], apps_root)


def test_stale_temporaries_from_a_crash_are_cleaned(tmp_path, apps_root):
    pkg = make_package(tmp_path)
    (dest,) = bundle("android", [pkg], apps_root)
    stale = dest.parent / f".{dest.name}.tmp-abc123"
    shutil.copytree(dest, stale)
    bundle("android", [pkg], apps_root)
    assert not stale.exists()
    assert re.fullmatch(r"[\w.-]+", dest.name)
