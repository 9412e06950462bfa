"""Human output off a terminal (``| tee log.txt``, a CI log): every table row is one line with
every value whole, never cut to 80 columns (``executo…``, ``dist/d…``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DIGITS, ROOT


def run_to_files(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """The CLI with stdout and stderr written to files, as a shell redirect or ``tee`` gives them."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        code = subprocess.run([sys.executable, "-m", "edge_export", *args], stdout=stdout, stderr=stderr,
                              cwd=ROOT, timeout=600, env={**os.environ, "COLUMNS": "80"}).returncode
    return code, out.read_text(), err.read_text()


@pytest.mark.slow
def test_export_summary_in_a_file_holds_the_full_package_path_and_runtime(tmp_path):
    # A deep --out, as CI workspaces have: the path alone is wider than 80 columns.
    out = tmp_path / "a-ci-workspace-with-a-long-name" / "build-artifacts-of-this-pipeline" / "dist"
    code, stdout, stderr = run_to_files(tmp_path, "--model", DIGITS, "--target", "android", "--out", str(out))
    assert code == 0, stderr[-3000:]
    package = str(out / "digits-0.1.0" / "android-fp32")
    assert len(package) > 80
    rows = [line for line in stdout.splitlines() if package in line]
    assert len(rows) == 1, stdout
    cells = [c.strip() for c in rows[0].strip("│ ").split("│")]
    assert cells[:4] == ["android", "fp32", "passed", "executorch"], rows[0]
    assert cells[-1] == package
    assert "…" not in stdout
    assert f"packages are in {out}/" in stdout


def test_recipe_matrix_in_a_file_has_each_recipe_on_one_line_with_every_cell_whole(tmp_path):
    code, stdout, stderr = run_to_files(tmp_path, "recipes")
    assert code == 0, stderr
    matrix = json.loads(subprocess.run([sys.executable, "-m", "edge_export", "recipes", "--json"],
                                       capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    assert "…" not in stdout
    for recipe, cells in matrix.items():
        row = next(line for line in stdout.splitlines() if line.startswith(f"│ {recipe} "))
        for cell in cells.values():
            whole = (f"→ {cell['alias']['data_free']}" if "alias" in cell
                     else cell["summary"] if cell["supported"] else cell["reason"])
            assert whole in row, (recipe, row)
