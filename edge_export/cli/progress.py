"""What the CLI draws: progress on stderr (a live line per (target, recipe) on a terminal, plain
lines otherwise) and the consoles every table of the CLI is printed on (``output_console``)."""

from __future__ import annotations

import os
import sys
import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from edge_export.quant import calibrating

# Calibration loops shorter than this finish before a bar is worth drawing.
CALIBRATION_BAR_MIN = 8
STATUS_STYLE = {"passed": "green", "not-run": "yellow", "failed": "red", "error": "red"}
# Width of a console that is not a terminal (a pipe, a file, a CI log). Rich would draw at 80
# columns there and cut cells ("executo…", "dist/d…"); tables are not expanded, so each takes
# only the width its content needs and every row stays one line with every value whole.
UNBOUNDED_WIDTH = 100_000


def output_console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console for tables and report lines: the terminal's width on a terminal, unbounded
    width anywhere else, so ``| tee log.txt`` keeps whole package paths and runtime names."""
    console = Console(file=file or (sys.stderr if stderr else sys.stdout))
    if not console.is_terminal:
        console.width = UNBOUNDED_WIDTH
    return console


class Progress:
    def __init__(self, keys: list[tuple[str, str]], quiet: bool = False) -> None:
        # A private copy of stderr: jobs redirect fd 2 to capture toolchain chatter.
        self.console = output_console(file=os.fdopen(os.dup(2), "w"))
        self.rows = {k: {"stage": "waiting", "since": time.monotonic(), "start": None,
                         "status": ""} for k in keys}
        self.quiet = quiet
        self.live: Live | None = None
        self._listening: list[calibrating.Listener | None] = []
        self._current: tuple[str, str] | None = None  # the in-process job in its quantize stage

    def replan(self, keys: list[tuple[str, str]]) -> None:
        """The plan changed after loading (a pre-quantized model ships its own recipe)."""
        self.rows = {k: self.rows.get(k) or {"stage": "waiting", "since": time.monotonic(),
                                             "start": None, "status": ""} for k in keys}

    def __enter__(self) -> Progress:
        if self.console.is_terminal and not self.quiet:
            self.live = Live(self._table(), console=self.console, refresh_per_second=8,
                             transient=False)
            self.live.__enter__()
            self._listening.append(calibrating.listen(self.calibrated))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listening:
            calibrating.listen(self._listening.pop())
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def stage(self, key: tuple[str, str], stage: str) -> None:
        row = self.rows[key]
        now = time.monotonic()
        row["start"] = row["start"] or now
        row["stage"], row["since"] = stage, now
        row.pop("calibration", None)
        self._current = key
        self._refresh()

    def calibrated(self, what: str, done: int, total: int) -> None:
        """A calibration sample done by the job running in this process."""
        if self._current is not None:
            self.calibrated_in(self._current, what, done, total)

    def calibrated_in(self, key: tuple[str, str], what: str, done: int, total: int) -> None:
        """A calibration sample done by job ``key`` (here or in a worker process): drawn
        as a bar in its row."""
        row = self.rows.get(key)
        if row is None or total < CALIBRATION_BAR_MIN or row["stage"] != "quantize":
            return
        row["calibration"] = (what, done, total)
        self._refresh()

    def finish(self, key: tuple[str, str], status: str, detail: str = "") -> None:
        row = self.rows[key]
        row["stage"], row["status"] = "done", status
        elapsed = time.monotonic() - (row["start"] or time.monotonic())
        row["elapsed"] = elapsed
        if self.live is None and not self.quiet:
            self.console.print(f"{key[0]:8} {key[1]:14} {status:8} {elapsed:6.1f}s  {detail}",
                               highlight=False, style=STATUS_STYLE.get(status))
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("target", "recipe", "stage", "time", "result"):
            table.add_column(col)
        now = time.monotonic()
        for (target, recipe), row in self.rows.items():
            elapsed = row.get("elapsed") or (now - row["start"] if row["start"] else 0.0)
            style = STATUS_STYLE.get(row["status"], "")
            result: object = f"[{style}]{row['status']}[/]" if style else row["status"]
            stage = row["stage"]
            if row.get("calibration") and row["stage"] == "quantize":
                what, done, total = row["calibration"]
                stage = f"quantize: {what} {done}/{total}"
                result = ProgressBar(total=total, completed=done, width=24)
            table.add_row(target, recipe, stage, f"{elapsed:5.1f}s", result)
        return table
