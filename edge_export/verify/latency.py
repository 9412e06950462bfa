"""Host latency that holds on a shared machine: one mechanism for export, ``latency``,
``report``, ``make bench`` and the zoo.

Every measurement warms up first, then runs the things being compared *interleaved*
(round r runs A, B, C, round r+1 runs B, C, A, ...), so a burst of other work hits all
of them alike instead of whichever happened to run during it. It reports min, median
and p90 per runner, and records the 1-minute load average, the usable CPU count and the
thread count beside the numbers. The minimum is the statistic least disturbed by other
load (interference only ever adds time), so comparisons between runtimes use it; median
and p90 say how steady the runs were. When the load average exceeds the cores, the
result carries ``busy: true`` and a warning is printed: those medians are not to be
trusted, the minimum still mostly is.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_RUNS = 20
DEFAULT_WARMUP = 3
DEFAULT_THREADS = 1
STATISTIC = "min_ms"  # what comparisons use (see the module docstring)


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_load() -> dict[str, Any]:
    """The 1-minute load average and core count; ``busy`` when load exceeds the cores."""
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return {"load_avg_1m": None, "cpu_count": cpu_count(), "busy": False}
    cores = cpu_count()
    return {"load_avg_1m": load, "cpu_count": cores, "busy": load > cores}


def busy_warning(load: dict[str, Any]) -> str | None:
    if not load.get("busy"):
        return None
    return (f"warning: the machine is busy (load average {load['load_avg_1m']} on "
            f"{load['cpu_count']} cores): latency medians are disturbed by other work; "
            "compare the minimum (min_ms), which is not")


def warn_if_busy(load: dict[str, Any]) -> None:
    message = busy_warning(load)
    if message:
        print(message, file=sys.stderr, flush=True)


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) by nearest rank: a time that was actually observed."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def stats(times_ms: Sequence[float]) -> dict[str, Any]:
    """min / median / p90 (nearest rank) of run times in milliseconds."""
    ordered = sorted(times_ms)
    n = len(ordered)
    mid = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"min_ms": round(ordered[0], 4), "median_ms": round(mid, 4),
            "p90_ms": round(nearest_rank(ordered, 0.9), 4), "runs": n}


def limit_threads(threads: int) -> dict[str, Any]:
    """Make the process-wide pools use ``threads``: torch's intra-op pool and, when
    threadpoolctl is installed, the BLAS/OpenMP pools numpy calls into (the MIL reference
    executor's matmuls and convolutions). Runtime-specific pools (XNNPACK in ExecuTorch,
    the LiteRT interpreter) are set by each exporter's ``load_runtime(threads=...)``."""
    applied: dict[str, Any] = {"threads": threads}
    if "torch" in sys.modules or _importable("torch"):
        import torch

        torch.set_num_threads(threads)
        applied["torch"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        applied["blas"] = "threadpoolctl not installed"
    else:
        threadpool_limits(limits=threads)  # not as a context: stays for the process
        applied["blas"] = threads
    return applied


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def measure(runners: dict[str, Callable[[], Any]], runs: int = DEFAULT_RUNS,
            warmup: int = DEFAULT_WARMUP, threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Time each runner ``runs`` times, interleaved, after ``warmup`` untimed calls each.

    Returns ``{"runners": {name: {min_ms, median_ms, p90_ms, runs}}, "warmup", "threads",
    "statistic", "load_avg_1m", "cpu_count", "busy"}``; the load is sampled before and
    after, and the higher of the two is kept (the conservative reading)."""
    before = machine_load()
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runners[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    after = machine_load()
    load = max((before, after), key=lambda m: m["load_avg_1m"] or 0.0)
    return {"runners": {name: stats(t) for name, t in times.items()}, "warmup": warmup,
            "threads": threads, "statistic": STATISTIC, **load}


def single(run: Callable[[], Any], runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
           threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """One runner, flattened: ``{min_ms, median_ms, p90_ms, runs, warmup, threads, load...}``."""
    result = measure({"run": run}, runs, warmup, threads)
    return {**result.pop("runners")["run"], **result}
