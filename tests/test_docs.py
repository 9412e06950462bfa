"""The docs show real output: every ``console`` block is run, or says it is an excerpt.

A fenced ``console`` block in README.md or docs/ is preceded by one marker line:

- ``<!-- check -->``: its ``$ command`` lines are run (bash, in a scratch directory that links the
  repository's examples/, tests/ and recipes/, with this environment's ``edge-export`` first on PATH and
  ``COLUMNS=120``), and each command's shown output must appear in its real output (stdout and stderr)
  line for line; a ``...`` line stands for lines left out. Each block gets a fresh directory.
- ``<!-- check slow -->``: the same, for commands that export real models (the digits example only);
  all of them share one directory, README first, so a later block may use an earlier block's ``dist/``.
- ``<!-- excerpt -->``: not run (too slow for the suite); it must still show the ``$ command`` that made it.

To refresh a block after a change, print the real output: ``python -m tests.test_docs README.md``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from .conftest import ROOT

FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKERS = ("check", "check slow", "excerpt")
BLOCK = re.compile(r"^```console[^\n]*\n(.*?)^```", re.M | re.S)
LINKED = ("examples", "tests", "recipes")
SEPARATOR = "@@edge-export-docs {}@@"


@dataclass
class Command:
    line: str
    expected: list[str]


@dataclass
class Block:
    path: Path
    lineno: int
    marker: str | None
    commands: list[Command]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.lineno}"


def blocks(path: Path) -> list[Block]:
    """Every console block of a file with its marker (the line before the fence) and commands."""
    text = path.read_text()
    found = []
    for m in BLOCK.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = re.fullmatch(r"<!-- (.+?) -->", before)
        commands: list[Command] = []
        for line in m.group(1).splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:], []))
            elif commands:
                commands[-1].expected.append(line)
        found.append(Block(path, text[:m.start()].count("\n") + 1, marker and marker.group(1), commands))
    return found


ALL = [b for f in FILES for b in blocks(f)]


def run_block(block: Block, cwd: Path) -> list[str]:
    """Run a block's commands as one bash script in ``cwd``; each command's output, in order."""
    script = ["exec 2>&1", "__rc=0"]
    for i, command in enumerate(block.commands):
        script += [f"__rc=$?; printf '\\n{SEPARATOR.format(i)}\\n'; (exit $__rc)", command.line]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    parts = re.split(r"\n" + SEPARATOR.format(r"\d+") + r"\n", "\n" + proc.stdout)
    return parts[1:]


def scratch(work: Path) -> Path:
    """A working directory in which the docs' relative paths (examples/..., tests/...) resolve."""
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    return work


def _lines(text: str | list[str]) -> list[str]:
    lines = text.splitlines() if isinstance(text, str) else text
    return [line.rstrip() for line in lines if line.strip()]


def mismatch(expected: list[str], actual: str) -> str | None:
    """None when every run of shown lines (between ``...`` lines) appears, in order, as consecutive
    lines of the real output; else the first shown line that does not."""
    real, pos = _lines(actual), 0
    chunks: list[list[str]] = [[]]
    for line in _lines(expected):
        if line == "...":
            chunks.append([])
        else:
            chunks[-1].append(line)
    for chunk in filter(None, chunks):
        at = next((i for i in range(pos, len(real) - len(chunk) + 1) if real[i:i + len(chunk)] == chunk), None)
        if at is None:
            return chunk[0]
        pos = at + len(chunk)
    return None


def check(block: Block, cwd: Path) -> None:
    outputs = run_block(block, cwd)
    assert len(outputs) == len(block.commands), f"{block.id}: the script stopped early:\n{outputs}"
    for command, actual in zip(block.commands, outputs):
        wrong = mismatch(command.expected, actual)
        assert wrong is None, (f"{block.id}: `$ {command.line}` did not print\n  {wrong}\n"
                               f"its real output:\n{actual}")


def test_every_console_block_is_checked_or_an_excerpt_with_its_command():
    assert ALL, "no console blocks found"
    for block in ALL:
        assert block.marker in MARKERS, f"{block.id}: precede the block with one of <!-- {' | '.join(MARKERS)} -->"
        assert block.commands, f"{block.id}: a console block shows the `$ command` that made it"


@pytest.mark.parametrize("block", [b for b in ALL if b.marker == "check"], ids=lambda b: b.id)
def test_checked_block_is_real_output(block: Block, tmp_path: Path):
    check(block, scratch(tmp_path))


@pytest.mark.slow
def test_checked_slow_blocks_are_real_output(tmp_path: Path):
    """The blocks that export (digits) in one shared directory, in file order, README first."""
    slow = [b for b in ALL if b.marker == "check slow"]
    assert slow
    work = scratch(tmp_path)
    for block in slow:
        check(block, work)


def test_mismatch_needs_consecutive_lines_unless_elided():
    out = "a\nnoise\nb\nc\n"
    assert mismatch(["a", "...", "b", "c"], out) is None
    assert mismatch(["a", "b"], out) == "a"
    assert mismatch(["c", "...", "b"], out) == "b"


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_exit_codes_are_the_clis():
    """README's table (the one a newcomer reads) lists exactly the codes ``--help`` prints."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    readme = [int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert readme == [code for code, _ in _hooks().exit_codes()]


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_command_reference_lists_every_command_and_option():
    """The generated pages against click itself: every command has a page naming all its options."""
    from edge_export.cli.main import cli

    pages = _hooks().pages()
    ctx = click.Context(cli, info_name="edge-export")
    names = cli.list_commands(ctx)
    assert {f"reference/cli/{n}.md" for n in names} | {"reference/cli/index.md"} <= set(pages)
    for name in names:
        page = pages[f"reference/cli/{name}.md"]
        for param in cli.get_command(ctx, name).params:
            for opt in param.opts if isinstance(param, click.Option) else ():
                assert f"{opt}" in page, f"{name}: {opt} missing from its reference page"


def test_schema_reference_lists_every_top_level_field():
    import json

    pages = _hooks().pages()
    for path in (ROOT / "edge_export" / "schemas").glob("*.schema.json"):
        page = pages[f"reference/schemas/{path.name.removesuffix('.schema.json')}.md"]
        for key in json.loads(path.read_text())["properties"]:
            assert f"| `{key}` |" in page, f"{path.name}: {key} missing"


if __name__ == "__main__":  # print the real output of a file's checked blocks, to paste into it
    work = scratch(Path(tempfile.mkdtemp(prefix="edge-export-docs-")))
    for block in blocks(Path(sys.argv[1]).resolve()):
        if block.marker and block.marker.startswith("check"):
            for command, out in zip(block.commands, run_block(block, work)):
                print(f"--- {block.id}\n$ {command.line}\n{out}")
