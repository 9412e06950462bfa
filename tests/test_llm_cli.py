"""``edge-export llm`` / ``generate`` speak export's dialect: ``--target`` required with export's
rules, ``--json`` as one ``{"ok", "packages"}`` / ``{"ok": false, "error"}`` object on stdout,
``--report``; ``generate --json`` gives tokens, text and speeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli
from .test_doctor import plugins  # noqa: F401 - the fixture registering two plugin targets

TINY_LM = ROOT / "examples" / "tiny_lm"


def _json_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, proc.stderr[-2000:]
    data = json.loads(proc.stdout)  # exactly one object
    assert data["ok"] is False and data["error"]["code"] == code
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line == f"error: {data['error']['message']}"
    return data["error"]["message"]


def test_target_is_required_as_for_export(tmp_path: Path) -> None:
    message = _json_error(run_cli("llm", "--model", str(TINY_LM), "--out", str(tmp_path), "--json"), 2)
    assert "Missing option '--target'" in message
    message = _json_error(run_cli("llm", "--model", str(TINY_LM), "--target", "windows", "--json"), 2)
    assert message.startswith("unknown target 'windows'") and "android, ios, tflite, coreai or all" in message


def test_named_targets_are_refused_and_all_skips_them_as_export_does(tmp_path: Path, plugins) -> None:  # noqa: F811
    """Two plugin targets: 'absent' (toolchain not installed) and 'broken' (installed, but no LLM backend)."""
    message = _json_error(run_cli("llm", "--model", str(TINY_LM), "--target", "absent", "--json", env=plugins), 2)
    assert message == ('target absent is not installed: it needs edge-export-absent-toolchain '
                       '(hint: pip install "edge-export-absent[absent]")')
    message = _json_error(run_cli("llm", "--model", str(TINY_LM), "--target", "broken", "--json", env=plugins), 2)
    assert message.startswith("no LLM backend for target 'broken'")
    code = ("from edge_export.llm.commands import llm_targets_for\n"
            "chosen, skipped = llm_targets_for(('all',))\n"
            "import json; print(json.dumps([chosen, [s.to_json() for s in skipped]]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **plugins}, check=True)
    chosen, skipped = json.loads(proc.stdout)
    assert chosen == ["android", "ios", "tflite"]
    assert skipped == [
        {"target": "absent", "installed": False, "missing": ["edge-export-absent-toolchain"],
         "install": 'pip install "edge-export[absent]"'.replace("edge-export[", "edge-export-absent[")},
        {"target": "coreai", "installed": True, "missing": [], "install": 'pip install "edge-export[coreai]"',
         "refused": "it has no LLM backend"},
        {"target": "broken", "installed": True, "missing": [], "install": None, "refused": "it has no LLM backend"}]


@pytest.mark.slow
def test_json_report_and_generate_json_on_a_real_export(tmp_path: Path, capsys) -> None:
    out, report = tmp_path / "dist", tmp_path / "llm.html"
    proc = run_cli("llm", "--model", str(TINY_LM), "--target", "android", "--recipe", "fp32", "--max-context", "32",
                   "--name", "tiny", "--out", str(out), "--json", "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)  # the toolchains' chatter went to stderr
    assert data["ok"] is True and set(data) == {"ok", "packages"}
    (package,) = data["packages"]
    pkg = out / "tiny-0.1.0" / "android-fp32"
    assert (package["target"], package["recipe"], package["status"], package["runtime"], package["path"]) == (
        "android", "fp32", "passed", "executorch", str(pkg))
    assert package["bytes"] == (pkg / "model.pte").stat().st_size
    page = report.read_text()
    assert "tiny 0.1.0 android/fp32" in page
    assert "golden prompts re-run on the host: passed (3 golden prompts re-generated token for token)" in page

    from edge_export.llm.commands import _print_results

    _print_results(data["packages"], [])  # the human table of the same run, off a terminal
    (row,) = [line for line in capsys.readouterr().out.splitlines() if str(pkg) in line]
    assert [c.strip() for c in row.strip("│ ").split("│")][:4] == ["android", "fp32", "passed", "executorch"]

    golden = json.loads((pkg / "golden" / "prompt_000.json").read_text())
    proc = run_cli("generate", str(pkg), "--prompt", golden["prompt"], "--max-new-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["tokens"] == golden["pytorch_ids"][:8]  # eager PyTorch's greedy tokens
    from tokenizers import Tokenizer

    assert result["text"] == Tokenizer.from_file(str(TINY_LM / "tokenizer.json")).decode(golden["pytorch_ids"][:8])
    assert (result["ok"], result["prompt"], result["new_tokens"], result["runtime"]) == (
        True, golden["prompt"], 8, "executorch")
    assert result["prompt_tokens"] == len(golden["prompt_ids"]) and result["decode_tok_s"] > 0
