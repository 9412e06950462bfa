"""Progress of the quantize stage's long loops over calibration samples.

Calibration (PT2E observers, bias correction, GPTQ's input statistics) runs one model
pass per sample: minutes for a real model on a small machine. The loops report
``(what, done, total)`` to a listener, which the CLI's live progress display installs on a
terminal (edge_export/cli/progress.py); with no listener (a worker process, a
non-terminal, the library) reporting costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")
Listener = Callable[[str, int, int], None]
_LISTENER: Listener | None = None


def listen(listener: Listener | None) -> Listener | None:
    """Install ``listener`` (None: stop); returns the previous one, to restore."""
    global _LISTENER
    previous, _LISTENER = _LISTENER, listener
    return previous


def tracked(samples: Iterable[T], what: str) -> Iterator[T]:
    """``samples``, reporting each one done to the listener."""
    total = len(samples) if isinstance(samples, Sized) else 0
    for done, sample in enumerate(samples, 1):
        yield sample
        if _LISTENER is not None:
            _LISTENER(what, done, total)
