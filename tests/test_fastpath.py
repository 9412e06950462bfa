"""The warm re-run fast path (edge_export.build.fastpath): a hit needs no torch, any change to
the model's source or weights is a miss, and a hit re-checks what it publishes.

No timed assertions: "fast" is shown by what a hit does not import (``make bench`` times it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_export.build import fastpath
from edge_export.build.pipeline import ExportOptions
from edge_export.build.plan import resolve_recipes
from edge_export.load.tensors import DynamicDim
from tests.conftest import ROOT

MODEL = '''
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import helper  # a module of the user's, beside this file


def build():
    model = nn.Sequential(nn.Linear(4, helper.WIDTH), nn.ReLU(), nn.Linear(helper.WIDTH, 3))
    model.load_state_dict(torch.load(Path(__file__).parent / "w.pt", weights_only=True))
    return model.eval(), (torch.ones(1, 4),)
'''


def _write_model(folder: Path, seed: int = 0) -> str:
    import torch
    from torch import nn

    folder.mkdir(exist_ok=True)
    (folder / "helper.py").write_text("WIDTH = 8\n")
    (folder / "model.py").write_text(MODEL)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    torch.save(model.state_dict(), folder / "w.pt")
    return f"{folder / 'model.py'}:build"


def _run(*args: str) -> tuple[dict, bool]:
    """The CLI in a subprocess: (its JSON, whether torch got imported)."""
    code = ("import sys\nfrom edge_export.cli.main import cli\n"
            f"try:\n    cli.main({list(args) + ['--json']!r})\nexcept SystemExit:\n    pass\n"
            "print('torch-imported:', 'torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.stdout, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["ok"], proc.stderr[-3000:]
    return data, proc.stderr.strip().splitlines()[-1] == "torch-imported: True"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_hit_without_torch_and_misses_on_source_or_weights_change(tmp_path: Path) -> None:
    spec = _write_model(tmp_path / "user")
    args = ["--model", spec, "--target", "ios", "--cache-dir", str(tmp_path / "cache"),
            "--name", "m", "--threads", "2"]
    cold, imported = _run(*args, "--out", str(tmp_path / "cold"))
    assert imported and "lower" in cold["packages"][0]["timings"]
    assert cold["packages"][0]["latency"]["threads"] == 2

    warm, imported = _run(*args, "--out", str(tmp_path / "warm"))
    assert not imported, "a fast-path hit must not import torch"
    assert set(warm["packages"][0]["timings"]) == {"cached", "package"}
    assert warm["packages"][0]["latency"] == cold["packages"][0]["latency"]
    assert _files(tmp_path / "cold") == _files(tmp_path / "warm")
    # Run again into the same folder: the packages are already the cache's files (hard
    # links), so nothing is re-published: same inodes, same bytes.
    published = {p: p.stat().st_ino for p in (tmp_path / "warm").rglob("*") if p.is_file()}
    assert any(p.stat().st_nlink > 1 for p in published)  # linked, not copied
    again, imported = _run(*args, "--out", str(tmp_path / "warm"))
    assert not imported and again["packages"][0]["sha256"] == warm["packages"][0]["sha256"]
    assert {p: p.stat().st_ino for p in (tmp_path / "warm").rglob("*") if p.is_file()} == published

    time.sleep(0.01)
    (tmp_path / "user" / "helper.py").write_text("WIDTH = 8  # an edit, same model\n")
    edited, imported = _run(*args, "--out", str(tmp_path / "edited"))
    assert imported, "an edited imported module must miss the fast path"
    assert set(edited["packages"][0]["timings"]) == {"cached", "package"}  # same graph: job cache

    _write_model(tmp_path / "user", seed=1)  # other weights, same file names and size
    retrained, imported = _run(*args, "--out", str(tmp_path / "retrained"), "--force")
    assert imported and "lower" in retrained["packages"][0]["timings"]
    assert retrained["packages"][0]["sha256"] != cold["packages"][0]["sha256"]

    # A damaged cached artifact (its fast entry intact) is rebuilt, never re-published.
    entry = next(p for p in (tmp_path / "cache" / "entries").glob("*/*")
                 if json.loads((p / "entry.json").read_text())["artifact"]["sha256"]
                 == retrained["packages"][0]["sha256"])
    weights = next(entry.rglob("weight.bin"))
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    rebuilt, imported = _run(*args, "--out", str(tmp_path / "rebuilt"))
    assert imported and "lower" in rebuilt["packages"][0]["timings"]
    assert _files(tmp_path / "rebuilt") == _files(tmp_path / "retrained")


# --- cheap: the pieces -------------------------------------------------------------------

def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"one")
    old = time.time() - 60
    os.utime(path, (old, old))
    hashes = fastpath.FileHashes(tmp_path / "cache")
    first = hashes.sha256(path)
    hashes.save()
    again = fastpath.FileHashes(tmp_path / "cache")
    assert again.sha256(path) == first
    assert str(path.resolve()) in json.loads((tmp_path / "cache" / "filehashes.json").read_text())
    path.write_bytes(b"two")  # new content, fresh mtime: re-hashed, and too fresh to cache
    assert again.sha256(path) not in (None, first)
    assert again.sha256(tmp_path / "missing") is None


def test_recording_keeps_the_users_files_and_weight_siblings(tmp_path: Path) -> None:
    (tmp_path / "user_mod_for_fastpath.py").write_text("X = 1\n")
    (tmp_path / "weights.pt").write_bytes(b"w")
    (tmp_path / "other.safetensors").write_bytes(b"s")
    (tmp_path / "notes.txt").write_text("not read")
    (tmp_path / "config.json").write_text("{}")
    sys.path.insert(0, str(tmp_path))
    try:
        with fastpath.recording() as read:
            import user_mod_for_fastpath  # noqa: F401
            (tmp_path / "config.json").read_text()
            import json as _json  # the standard library is not the user's  # noqa: F401
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_mod_for_fastpath", None)
    deps = fastpath.dependencies(read, exclude=[])
    assert [Path(d).name for d in deps] == ["config.json", "other.safetensors",
                                            "user_mod_for_fastpath.py", "weights.pt"]


def test_key_changes_with_options_and_data(tmp_path: Path) -> None:
    data = tmp_path / "val.npz"
    data.write_bytes(b"a")
    hashes = fastpath.FileHashes(tmp_path / "cache")
    plan = resolve_recipes(["tflite"], ("fp32",))
    base = ExportOptions(model="m.py:build", targets=("tflite",), validation_data=data)

    def key(**changes) -> str:
        from dataclasses import replace

        return fastpath.fast_key(replace(base, **changes), plan, hashes)

    first = key()
    assert key() == first
    assert key(out=tmp_path / "elsewhere", jobs=4, debug=True) == first  # not the packages'
    variants = [key(threads=2), key(parity_samples=3), key(version="2.0"), key(name="n"),
                key(model="m.py:other"), key(max_accuracy_drop=0.5),
                key(dynamic=(("x", DynamicDim(0, 1, 8)),)),
                fastpath.fast_key(base, resolve_recipes(["android"], ("fp32",)), hashes)]
    data.write_bytes(b"b")
    variants.append(key())
    assert first not in variants and len(set(variants)) == len(variants)
