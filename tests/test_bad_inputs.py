"""The bad-input catalogue: one table of (input, exit code, phrases the message must contain).

Every row runs through the real CLI twice: in-process with click's runner (plain output)
and as a subprocess with ``--json``. Both must give the documented exit code, exactly one
``error:`` line on stderr holding the phrases, no traceback, and (with --json) one JSON
object ``{ok: false, error: {code, message}}`` on stdout. Most rows fail before any
toolchain runs; the few that need one are marked slow.
"""

from __future__ import annotations

import contextlib
import json
import stat
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_export.cli.main import cli

from .conftest import ROOT, run_cli
from .test_bundle import make_package

BAD = ROOT / "tests" / "bad_models"
MODELS = BAD / "models.py"
TINY = f"{MODELS}:build"
HANDED = ROOT / "tests" / "handed_over.py"


def marker_line(path: Path, marker: str) -> int:
    """The line of ``# <- marker`` in a bad model, so rows need no hard-coded line numbers."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if f"<- {marker}" in line)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (tests run as root); skips where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Env:
    """Scratch space for one row: writes the files a row needs and names the --out folder."""

    def __init__(self, tmp: Path, stack: contextlib.ExitStack) -> None:
        self.tmp, self.stack = tmp, stack
        self.out = tmp / "out"

    def path(self, name: str, data: bytes | str | None = None) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def npz(self, name: str, **arrays: np.ndarray) -> Path:
        path = self.path(name)
        np.savez(path, **arrays)
        return path

    def mount(self, name: str, options: str) -> Path:
        return self.stack.enter_context(tmpfs(self.tmp / name, options))

    def export(self, *extra: str, model: str = TINY, target: str = "tflite") -> list[str]:
        return ["--model", model, "--target", target, "--out", str(self.out), "--jobs", "1",
                "--no-cache", *extra]


def tiny_program(env: Env) -> Path:
    import torch

    from tests.bad_models.models import build

    module, example = build()
    path = env.path("tiny.pt2")
    torch.export.save(torch.export.export(module, example), str(path))
    return path


def truncated_pt2(env: Env) -> list[str]:
    path = tiny_program(env)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return env.export(model=str(path))


def pickled_module(env: Env) -> list[str]:
    import torch

    path = env.path("model.pt")
    torch.save(torch.nn.Linear(4, 3), str(path))
    return env.export(model=str(path))


def pickled_state_dict(env: Env) -> list[str]:
    import torch

    path = env.path("weights.pt")
    torch.save(torch.nn.Linear(4, 3).state_dict(), str(path))
    return env.export("--trust-pickle", model=str(path))


def torchscript(env: Env) -> list[str]:
    import torch

    path = env.path("scripted.pt")
    torch.jit.trace(torch.nn.Linear(4, 3), torch.randn(1, 4)).save(str(path))
    return env.export(model=str(path))


def recipe_file(env: Env, text: str) -> list[str]:
    return env.export("--recipe", str(env.path("mine.toml", text)))


SYNTAX_ERROR = "def build(:\n"
USER_RECIPE = 'name = "mine"\ntarget = "{target}"\nsummary = "a user recipe"\n{extra}'
GATE = "[parity]\ncosine = 0.99\n"


def calibration(env: Env, **arrays: np.ndarray) -> list[str]:
    return env.export("--calibration-data", str(env.npz("calib.npz", **arrays)))


def package_with(env: Env, change: Callable[[Path], None]) -> list[str]:
    pkg = make_package(env.tmp / "pkgs", target="tflite")
    change(pkg)
    return ["verify", str(pkg)]


def flip_labels_byte(pkg: Path) -> None:
    data = bytearray((pkg / "labels.txt").read_bytes())
    data[0] ^= 1
    (pkg / "labels.txt").write_bytes(bytes(data))


def set_schema_version(pkg: Path) -> None:
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def zip_with(env: Env, *entries: tuple[zipfile.ZipInfo | str, bytes], bound: int | None = None) -> list[str]:
    path = env.path("pkg.zip")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/manifest.json", b"{}")
        for info, data in entries:
            zf.writestr(info, data)
    return ["verify", str(path), *(["--max-bytes", str(bound)] if bound else [])]


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def lying_zip(env: Env) -> list[str]:
    """A bomb whose headers claim 1,000 bytes: the bound must count the inflated bytes."""
    args = zip_with(env, ("pkg/zeros.bin", bytes(4_000_000)))
    path = Path(args[1])
    data = bytearray(path.read_bytes())
    small = (1000).to_bytes(4, "little")
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo("pkg/zeros.bin").header_offset
    data[local + 22:local + 26] = small  # local header: uncompressed size
    central = data.rfind(b"PK\x01\x02")  # the last central entry is zeros.bin
    data[central + 24:central + 28] = small
    path.write_bytes(bytes(data))
    return [*args, "--max-bytes", "100000"]


def out_on_readonly_mount(env: Env) -> list[str]:
    return ["--model", TINY, "--target", "tflite", "--out", str(env.mount("ro", "ro,size=1m") / "dist")]


def out_on_full_disk(env: Env) -> list[str]:
    env.out = env.mount("full", "size=64k")
    return env.export()


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Env], list[str]]
    code: int
    phrases: tuple[str, ...] | Callable[[], tuple[str, ...]]
    slow: bool = False

    def expected(self) -> tuple[str, ...]:
        return self.phrases() if callable(self.phrases) else self.phrases


CASES = [
    # --- model spec --------------------------------------------------------------------
    Case("model-file-missing", lambda e: e.export(model=f"{BAD}/nope.py:build"), 2, ("does not exist",)),
    Case("model-attribute-missing", lambda e: e.export(model=f"{MODELS}:nope"), 2,
         ("has no attribute 'nope'",)),
    Case("model-import-error", lambda e: e.export(model=f"{BAD}/import_error.py:build"), 2,
         lambda: ("cannot import name 'no_such_name'",
                  f"import_error.py line {marker_line(BAD / 'import_error.py', 'import-error')}")),
    Case("model-syntax-error", lambda e: e.export(model=f"{e.path('broken.py', SYNTAX_ERROR)}:build"), 2,
         ("SyntaxError", "broken.py line 1")),
    Case("model-package-missing", lambda e: e.export(model="no_such_pkg.models:build"), 2,
         ("no module named 'no_such_pkg.models'",)),
    Case("model-spec-without-attribute", lambda e: e.export(model=str(MODELS)), 2, ("cannot read model spec",)),
    Case("model-attribute-not-a-module", lambda e: e.export(model=f"{MODELS}:CONFIG"), 2,
         ("is a dict, not an nn.Module",)),
    Case("model-builder-returns-string", lambda e: e.export(model=f"{MODELS}:returns_string"), 2,
         ("gave a str, not an nn.Module",)),
    Case("model-builder-raises", lambda e: e.export(model=f"{MODELS}:raises"), 2,
         lambda: ("checkpoint weights.bin not found", f"models.py line {marker_line(MODELS, 'raises')}")),
    Case("pt2-truncated", truncated_pt2, 2, ("not a readable torch.export .pt2 file",)),
    Case("pt2-garbage", lambda e: e.export(model=str(e.path("junk.pt2", b"\x00junk" * 100))), 2,
         ("not a readable torch.export .pt2 file",)),
    Case("pt-pickle-without-trust", pickled_module, 2, ("refusing to unpickle", "arbitrary code",
                                                        "--trust-pickle")),
    Case("pt-state-dict-trusted", pickled_state_dict, 2, ("not a pickled nn.Module",)),
    Case("torchscript-file", torchscript, 2, ("TorchScript", "torch.export.save")),
    # --- example inputs ---------------------------------------------------------------
    Case("inputs-missing", lambda e: e.export(model=f"{MODELS}:no_examples"), 2,
         ("provides no example inputs", "--input")),
    Case("inputs-not-tensors", lambda e: e.export(model=f"{MODELS}:bad_examples"), 2,
         ("must be a tensor or a tuple of tensors",)),
    Case("input-spec-malformed", lambda e: e.export("--input", "x=1by4"), 2, ("malformed --input 'x=1by4'",)),
    Case("input-spec-unknown-dtype", lambda e: e.export("--input", "x=1x4:float128"), 2,
         ("unknown dtype 'float128'",)),
    Case("input-spec-zero-dim", lambda e: e.export("--input", "x=1x0"), 2, ("zero-sized dimension",)),
    Case("package-name-escapes-out", lambda e: e.export("--name", "../evil"), 2,
         ("--name '../evil' is not a valid package name",)),
    Case("package-version-malformed", lambda e: e.export("--version", "1 2"), 2,
         ("--version '1 2' is not a valid version",)),
    Case("input-wrong-rank", lambda e: e.export("--input", "x=1x3x5"), 2,
         ("rejects example inputs of shape 1x3x5", "mat1 and mat2")),
    Case("input-dtype-no-target-takes", lambda e: e.export(model=f"{MODELS}:float64"), 2,
         ("float64, which no target takes",)),
    # --- export failures --------------------------------------------------------------
    Case("outputs-nan", lambda e: e.export(model=f"{MODELS}:nan"), 2, ("NaN/Inf in output 0",)),
    Case("outputs-inf", lambda e: e.export(model=f"{MODELS}:inf"), 2, ("NaN/Inf in output 0",)),
    Case("data-dependent-control-flow", lambda e: e.export(model=f"{MODELS}:data_dependent"), 3,
         lambda: ("torch.export failed", "data-dependent expression",
                  f"models.py line {marker_line(MODELS, 'data-dependent')}")),
    Case("op-one-target-cannot-lower",
         lambda e: e.export("--target", "android", model=f"{MODELS}:round_decimals"), 3,
         ("android/fp32", "aten.round.decimals", "succeeded: tflite/fp32"), slow=True),
    # --- recipes and data -------------------------------------------------------------
    Case("recipe-unknown", lambda e: e.export("--recipe", "int3"), 2, ("unknown recipe 'int3'",)),
    Case("recipe-unsupported-by-target", lambda e: e.export("--recipe", "int8-weight", target="android"), 2,
         ("recipe 'int8-weight' is not supported on android", "android supports:")),
    Case("recipe-file-unsupported",
         lambda e: recipe_file(e, USER_RECIPE.format(target="tflite", extra='unsupported = "no int3 kernels"')),
         2, ("says it is unsupported", "no int3 kernels")),
    Case("recipe-file-other-target", lambda e: recipe_file(e, USER_RECIPE.format(target="ios", extra=GATE)), 2,
         ("is for target ios",)),
    Case("recipe-file-not-toml", lambda e: recipe_file(e, "name = [unclosed\n"), 2, ("is not valid TOML",)),
    Case("recipe-file-unknown-key",
         lambda e: recipe_file(e, USER_RECIPE.format(target="tflite", extra="colour = 3\n")), 2,
         ("unknown key 'colour'",)),
    Case("recipe-file-missing", lambda e: e.export("--recipe", str(e.tmp / "absent.toml")), 2,
         ("absent.toml does not exist",)),
    Case("calibration-missing", lambda e: e.export("--calibration-data", str(e.tmp / "none.npz")), 2,
         ("--calibration-data", "does not exist")),
    Case("calibration-wrong-keys", lambda e: calibration(e, images=np.zeros((4, 1, 4), "f4")), 2,
         ("has keys ['images']", "expected the model's inputs ['x']")),
    Case("calibration-wrong-shape", lambda e: calibration(e, x=np.zeros((4, 1, 5), "f4")), 2,
         ("has shape [1, 5], the model expects [1, 4]",)),
    Case("calibration-empty", lambda e: calibration(e, x=np.zeros((0, 1, 4), "f4")), 2, ("holds no samples",)),
    Case("calibration-not-an-array-file",
         lambda e: e.export("--calibration-data", str(e.path("calib.npz", "x,y\n1,2\n"))), 2,
         ("is not a readable .npz file",)),
    Case("calibration-unsupported-type",
         lambda e: e.export("--calibration-data", str(e.path("calib.csv", "1,2,3,4\n"))), 2,
         ("unsupported file type .csv",)),
    Case("eval-data-without-labels",
         lambda e: e.export("--eval-data", str(e.npz("eval.npz", x=np.zeros((3, 1, 4), "f4")))), 2,
         ("has no 'labels' array",)),
    Case("eval-data-label-count",
         lambda e: e.export("--eval-data", str(e.npz("eval.npz", x=np.zeros((3, 1, 4), "f4"),
                                                     labels=np.zeros(2, "i8")))), 2,
         ("2 labels for 3 samples",)),
    # --- output -----------------------------------------------------------------------
    Case("out-is-a-file", lambda e: ["--model", TINY, "--target", "tflite", "--out", str(e.path("f", "x"))], 2,
         ("is a file, not a directory",)),
    Case("out-under-a-file",
         lambda e: ["--model", TINY, "--target", "tflite", "--out", str(e.path("f", "x") / "dist")], 2,
         ("cannot be created", "is a file")),
    Case("out-read-only", out_on_readonly_mount, 2, ("is not writable",)),
    Case("out-disk-full", out_on_full_disk, 2, ("no space left",)),
    # --- models as users hand them over (tests/handed_over.py) ------------------------
    Case("output-not-a-tensor", lambda e: e.export(model=f"{MODELS}:returns_count"), 2,
         ("returns a int at count, not a tensor",)),
    Case("torchao-unknown-scheme", lambda e: e.export(model=f"{HANDED}:torchao_float8"), 2,
         ("tensor subclasses edge-export does not carry", "edge-export recipes"), slow=True),
    Case("pt2e-model-requantized", lambda e: e.export("--recipe", "int8-dynamic", model=f"{HANDED}:pt2e",
                                                      target="android"), 2,
         ("already quantized (pt2e)", "would quantize it again"), slow=True),
    Case("pt2e-model-on-tflite", lambda e: e.export(model=f"{HANDED}:pt2e"), 2,
         ("target tflite cannot carry a pt2e model", "targets that can: android, ios"), slow=True),
    Case("prequantized-recipe-on-float-model", lambda e: e.export("--recipe", "prequantized",
                                                                  target="android"), 2,
         ("is for models quantized with PT2E before export",), slow=True),
    # --- packages (edge-export verify) ------------------------------------------------
    Case("verify-path-missing", lambda e: ["verify", str(e.tmp / "nothing")], 2, ("does not exist",)),
    Case("verify-manifest-missing", lambda e: package_with(e, lambda p: (p / "manifest.json").unlink()), 2,
         ("no manifest.json",)),
    Case("verify-manifest-invalid-json",
         lambda e: package_with(e, lambda p: (p / "manifest.json").write_text('{"schema_version": 1,')), 2,
         ("not valid JSON",)),
    Case("verify-wrong-schema-version", lambda e: package_with(e, set_schema_version), 2, ("schema_version",)),
    Case("verify-hash-mismatch", lambda e: package_with(e, flip_labels_byte), 1,
         ("'labels.txt' does not match its manifest hash",)),
    Case("verify-zip-dotdot", lambda e: zip_with(e, ("pkg/../../evil.txt", b"x")), 2,
         ("outside the extraction directory",)),
    Case("verify-zip-absolute", lambda e: zip_with(e, ("/tmp/evil-edge-export.txt", b"x")), 2,
         ("outside the extraction directory",)),
    Case("verify-zip-symlink", lambda e: zip_with(e, symlink_entry("pkg/link", "/etc/passwd")), 2,
         ("is a symlink",)),
    Case("verify-zip-bomb", lambda e: zip_with(e, ("pkg/zeros.bin", bytes(8_000_000)), bound=1_000_000), 2,
         ("over the 1,000,000-byte limit",)),
    Case("verify-zip-bomb-lying-headers", lying_zip, 2, ("is corrupt",)),
    Case("verify-not-a-zip", lambda e: ["verify", str(e.path("pkg.zip", "not a zip"))], 2,
         ("not a readable zip",)),
]


def _param(case: Case):
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.slow else [])


def test_catalogue_is_large_and_ids_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    with contextlib.ExitStack() as stack:
        yield Env(tmp_path, stack)


def check_stderr(stderr: str, case: Case) -> str:
    """No traceback; exactly one ``error:`` line, holding every phrase; returns it."""
    assert "Traceback" not in stderr and 'File "' not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for phrase in case.expected():
        assert phrase in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_json(case: Case, env: Env):
    args = case.args(env)
    proc = run_cli(*args, "--json", cwd=env.tmp)
    assert proc.returncode == case.code, proc.stderr
    line = check_stderr(proc.stderr, case)
    data = json.loads(proc.stdout)
    assert isinstance(data, dict) and data["ok"] is False, proc.stdout
    assert data["error"]["code"] == case.code
    assert data["error"]["message"] == line.removeprefix("error: ")


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_plain(case: Case, env: Env):
    args = case.args(env)
    if case.slow:  # a real toolchain: a subprocess, like a user runs it
        proc = run_cli(*args, cwd=env.tmp)
        code, stderr = proc.returncode, proc.stderr
    else:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        code, stderr = result.exit_code, result.stderr
    assert code == case.code, stderr
    check_stderr(stderr, case)
    if args[0] != "verify":
        assert not any(p.name.startswith(".tmp-") for p in env.out.glob("*")), "temporaries left under --out"


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def test_an_untrusted_pickle_is_never_unpickled(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(_Payload(marker), str(path))
    for spec, flag in ((str(path), "--model"), (str(path), "--calibration-data")):
        args = ["--model", spec] if flag == "--model" else ["--model", TINY, flag, spec]
        result = CliRunner().invoke(cli, [*args, "--target", "tflite", "--out", str(tmp_path / "out")],
                                    catch_exceptions=False)
        assert result.exit_code == 2, result.stderr
        assert not marker.exists(), f"{flag} unpickled an untrusted file"
