"""--calibration-data progress: the quantize stage's per-sample loops draw a bar in the job's
row of the live display (terminal only), and nothing is installed otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from edge_export.cli.progress import Progress
from edge_export.quant import calibrating
from edge_export.quant.calibrating import tracked

KEY = ("android", "int8-static")


def _terminal_progress() -> Progress:
    progress = Progress([KEY])
    progress.console = Console(file=io.StringIO(), force_terminal=True, width=120)
    return progress


def _rendered(progress: Progress) -> str:
    console = Console(file=io.StringIO(), force_terminal=False, width=120)
    console.print(progress._table())
    return console.file.getvalue()


def test_calibration_loop_shows_a_bar_in_the_quantize_row():
    progress = _terminal_progress()
    with progress:
        progress.stage(KEY, "quantize")
        for i, _ in enumerate(tracked([object()] * 32, "calibrating"), 1):
            if i == 12:
                assert "quantize: calibrating 11/32" in _rendered(progress)
        assert "calibrating 32/32" in _rendered(progress)
        progress.stage(KEY, "lower")  # the bar belongs to the quantize stage only
        assert "calibrating" not in _rendered(progress)
    assert calibrating.listen(None) is None  # the display restored the previous (no) listener


def test_short_loops_and_non_terminals_draw_nothing():
    progress = _terminal_progress()
    with progress:
        progress.stage(KEY, "quantize")
        list(tracked(range(4), "calibrating"))  # a handful of samples: no bar
        assert "calibrating" not in _rendered(progress)
    plain = Progress([KEY])
    plain.console = Console(file=io.StringIO(), force_terminal=False)
    with plain:
        previous = calibrating.listen(None)
        assert previous is None  # nothing listens when the output is not a terminal


def test_a_worker_jobs_samples_draw_in_that_jobs_row():
    """Jobs in worker processes report samples with their key (edge_export/build/workers.py)."""
    other = ("tflite", "int8-static")
    progress = Progress([KEY, other])
    progress.console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with progress:
        progress.stage(KEY, "quantize")
        progress.stage(other, "quantize")  # the in-process "current" job is now the other one
        progress.calibrated_in(KEY, "calibrating", 9, 16)
        table = _rendered(progress)
        assert "calibrating 9/16" in table
        row = next(line for line in table.splitlines() if "calibrating" in line)
        assert row.split()[0] == "android"
