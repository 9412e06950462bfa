"""The latency mechanism (edge_export.verify.latency): statistics, interleaving, load and threads.

No timed assertions: only what the numbers are computed from and what is recorded."""

from __future__ import annotations

import pytest

from edge_export.verify import latency
from tests.conftest import run_cli


def test_stats_min_median_p90_by_hand() -> None:
    # sorted: 1 2 3 4 5 6 7 8 9 10 -> median (5+6)/2, p90 = the 9th of 10 (nearest rank)
    assert latency.stats([5, 1, 4, 2, 3, 10, 9, 8, 7, 6]) == {
        "min_ms": 1, "median_ms": 5.5, "p90_ms": 9, "runs": 10}
    # sorted: 0.5 2 7 -> median 2, p90 = ceil(2.7) = the 3rd
    assert latency.stats([7.0, 0.5, 2.0]) == {"min_ms": 0.5, "median_ms": 2.0, "p90_ms": 7.0,
                                              "runs": 3}
    assert latency.stats([4.0]) == {"min_ms": 4.0, "median_ms": 4.0, "p90_ms": 4.0, "runs": 1}


def test_runs_are_warmed_up_then_interleaved_in_rotating_order() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    result = latency.measure(runners, runs=3, warmup=2, threads=1)
    assert calls == ["a", "a", "b", "b", "c", "c",  # warm-up, untimed
                     "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotating rounds
    assert set(result["runners"]) == {"a", "b", "c"}
    assert all(s["runs"] == 3 and s["min_ms"] <= s["median_ms"] <= s["p90_ms"]
               for s in result["runners"].values())
    assert result["statistic"] == "min_ms" and result["threads"] == 1 and result["warmup"] == 2


def test_load_average_and_cores_are_recorded_and_busy_means_load_over_cores() -> None:
    result = latency.single(lambda: None, runs=2, warmup=0)
    assert result["cpu_count"] >= 1
    assert result["load_avg_1m"] is not None and result["load_avg_1m"] >= 0
    assert result["busy"] == (result["load_avg_1m"] > result["cpu_count"])
    busy = {"load_avg_1m": 9.5, "cpu_count": 2, "busy": True}
    assert "9.5" in latency.busy_warning(busy) and "min_ms" in latency.busy_warning(busy)
    assert latency.busy_warning({**busy, "busy": False}) is None


def test_limit_threads_sets_torch_and_blas_pools() -> None:
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        applied = latency.limit_threads(1)
        assert applied["torch"] == torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
        latency.limit_threads(before)


@pytest.mark.parametrize("command", [["--model", "examples/digits.py:build", "--target",
                                      "tflite", "--threads", "0"],
                                     ["latency", "nowhere", "--threads", "0"]])
def test_threads_option_is_validated(command: list[str]) -> None:
    proc = run_cli(*command)
    assert proc.returncode == 2 and "--threads" in proc.stderr
