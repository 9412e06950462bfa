"""Worker processes for (target, recipe) jobs, started before the model is exported.

Each worker is spawned with the target of the job it will most likely run first and
imports that toolchain at once (``Exporter.preload``), so the slow imports overlap
with loading and exporting the model in the main process. Jobs are handed out in
order, the next one to whichever worker is free first, and results come back in job
order whatever the order they finish in. Progress (stages and calibration samples) and
results travel over one pipe per worker (no manager process).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from edge_export.build.job import Job, JobResult
from edge_export.errors import exit_process

Finished = Callable[[JobResult], None]
Calibrated = Callable[[tuple[str, str], str, int, int], None]


@dataclass(eq=False)
class _Worker:
    proc: Any
    conn: Connection
    target: str  # the toolchain it preloaded


class WorkerPool:
    def __init__(self, targets: list[str], log_dir: Path, debug: bool = False) -> None:
        """Start one worker per entry of ``targets`` (the toolchain it preloads)."""
        self.log_dir, self.debug = log_dir, debug
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._busy: set[_Worker] = set()
        for target in targets:
            self._start(target)

    def _start(self, target: str) -> _Worker:
        parent, child = self._ctx.Pipe()
        log = None if self.debug else self.log_dir / f"preload-{target}-{len(self._workers)}.log"
        proc = self._ctx.Process(target=_serve, args=(child, target, log), daemon=True)
        proc.start()
        child.close()
        worker = _Worker(proc, parent, target)
        self._workers.append(worker)
        return worker

    def run(self, jobs: list[Job], limit: int, stage: Callable[[tuple[str, str], str], None],
            finished: Finished, calibrated: Calibrated | None = None) -> list[JobResult]:
        """Run ``jobs`` on at most ``limit`` workers (the started ones first)."""
        results: list[JobResult | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        idle = list(self._workers)
        busy: dict[Connection, tuple[_Worker, int]] = {}
        while pending or busy:
            while pending and (idle or len(busy) < limit):
                worker = idle.pop(0) if idle else self._start(jobs[pending[0]].target)
                index = next((i for i in pending if jobs[i].target == worker.target), pending[0])
                pending.remove(index)
                worker.conn.send(jobs[index])
                busy[worker.conn] = (worker, index)
                self._busy.add(worker)
            for conn in wait(list(busy)):
                worker, index = busy[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    message = ("result", _died(jobs[index], worker.proc))
                    self._workers.remove(worker)
                if message[0] == "stage":
                    stage(jobs[index].key, message[1])
                    continue
                if message[0] == "calibration":
                    if calibrated is not None:
                        calibrated(jobs[index].key, *message[1:])
                    continue
                results[index] = message[1]
                finished(message[1])
                del busy[conn]
                self._busy.discard(worker)
                if worker in self._workers:
                    idle.append(worker)
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop the workers: idle ones exit cleanly, busy ones (an error or Ctrl-C) are killed."""
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
            if worker in self._busy:
                worker.proc.terminate()
        for worker in self._workers:
            worker.proc.join(timeout=10)
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join()
            worker.conn.close()
        self._workers.clear()


def _died(job: Job, proc: Any) -> JobResult:
    from edge_export.errors import EXIT_TOOLCHAIN

    proc.join(timeout=5)
    return JobResult(job.target, job.recipe.name, "error", error_code=EXIT_TOOLCHAIN,
                     error=f"the worker process for {job.target}/{job.recipe.name} died "
                           f"(exit code {proc.exitcode}); run with --jobs 1 --debug to see why")


def _serve(conn: Connection, target: str, log: Path | None) -> None:
    """Worker main loop: preload the toolchain, then run jobs until told to stop.
    Ctrl-C is the main process's to handle: it stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from edge_export.build.capture import toolchain_output
    from edge_export.build.exporter import get_exporter
    from edge_export.build.job import run_job
    from edge_export.quant import calibrating

    try:
        with toolchain_output(log or Path(os.devnull), enabled=log is not None):
            import torch  # noqa: F401

            get_exporter(target).preload()
    except Exception:  # noqa: BLE001 - the job itself reports what fails here
        pass
    calibrating.listen(lambda what, done, total: conn.send(("calibration", what, done, total)))
    try:
        while (job := conn.recv()) is not None:
            conn.send(("result", run_job(job, lambda key, stage: conn.send(("stage", stage)))))
    except (EOFError, OSError):  # the main process is gone
        pass
    exit_process(0)  # without module teardown, which would add ~2 s to close()
