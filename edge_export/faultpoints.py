"""Named points where a fault test can hold a run, so a kill lands exactly there.

A test sets ``EDGE_EXPORT_PAUSE_AT=<point>:<marker file>``; when the run reaches that
point it writes its pid to the marker and sleeps until the file is removed (or the
process is killed). Without the variable, each point is a dictionary lookup. This
makes fault tests deterministic on a loaded machine instead of racing the run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_ENV = "EDGE_EXPORT_PAUSE_AT"

# The points a test can name (documented here so a reader finds every one).
BEFORE_PUBLISH = "before-publish"  # every job done, packages staged, nothing swapped in yet
AFTER_EXPORT = "after-export"  # model exported, workspace written, jobs not yet finished


def pause_point(name: str) -> None:
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return
    point, _, marker = value.partition(":")
    if point != name or not marker:
        return
    path = Path(marker)
    path.write_text(str(os.getpid()))
    while path.exists():
        time.sleep(0.05)


# Faults a test can force, so a failure path runs for real (the runtime rejects a broken
# artifact) instead of a faked result: ``EDGE_EXPORT_FAULT=<fault>:<n>``.
FAULT_ENV = "EDGE_EXPORT_FAULT"
CORRUPT_AUTO_CANDIDATE = "corrupt-auto-candidate"  # keep_float auto's n-th lowered artifact (1-based)


def fault_at(name: str, index: int) -> bool:
    point, _, at = os.environ.get(FAULT_ENV, "").partition(":")
    return point == name and at == str(index)


def corrupt(path: Path) -> None:
    """Overwrite an artifact (a file, or a directory such as .mlpackage) with no model at all."""
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
        path.mkdir()
    else:
        path.write_bytes(b"corrupted by EDGE_EXPORT_FAULT\n")
