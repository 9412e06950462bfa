"""Where a release's jobs run: in this process, in local worker processes (``--jobs``),
or on Ray workers (``--executor ray``). Each executor reports every outcome as it
arrives and, without ``keep_going``, stops scheduling at the first failure."""

from __future__ import annotations

from collections.abc import Callable

from edge_export.errors import UsageError
from edge_export.release.jobs import JobOutcome, ReleaseJob, build_package


def run_jobs(jobs: list[ReleaseJob], executor: str, workers: int, keep_going: bool,
             on_done: Callable[[JobOutcome], None], ray_address: str | None = None) -> list[JobOutcome]:
    """Run the jobs; without ``keep_going`` stop scheduling at the first failure."""
    if not jobs:
        return []
    if executor == "ray":
        return _run_ray(jobs, workers, keep_going, on_done, ray_address)
    if workers <= 1 or len(jobs) == 1:
        outcomes = []
        for job in jobs:
            outcomes.append(build_package(job))
            on_done(outcomes[-1])
            if not outcomes[-1].ok and not keep_going:
                break
        return outcomes
    return _run_processes(jobs, workers, keep_going, on_done)


def _run_processes(jobs: list[ReleaseJob], workers: int, keep_going: bool,
                   on_done: Callable[[JobOutcome], None]) -> list[JobOutcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    outcomes = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        pending = {pool.submit(build_package, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                outcomes.append(fut.result())
                on_done(outcomes[-1])
            if not keep_going and any(not o.ok for o in outcomes):
                for fut in pending:
                    fut.cancel()
                pending = {f for f in pending if not f.cancelled()}
    return outcomes


def _run_ray(jobs: list[ReleaseJob], workers: int, keep_going: bool,
             on_done: Callable[[JobOutcome], None], address: str | None) -> list[JobOutcome]:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray", hint="pip install 'edge-export[ray]'") from None
    started = not ray.is_initialized()
    if started:
        local = {} if address else {"num_cpus": workers}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        remote = ray.remote(num_cpus=1)(build_package)
        pending = [remote.remote(job) for job in jobs]
        outcomes = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            outcomes.append(ray.get(done[0]))
            on_done(outcomes[-1])
            if not outcomes[-1].ok and not keep_going:
                for ref in pending:
                    ray.cancel(ref)
                break
        return outcomes
    finally:
        if started:
            ray.shutdown()
