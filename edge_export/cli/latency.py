"""``edge-export latency``: which package runs fastest for this model, on this host?

Each package's artifact is loaded on its target's host runtime and fed its first golden
sample (the model's example input); with ``--model`` the PyTorch eager model runs the same
input. All of them are timed interleaved after warm-up (``edge_export.verify.latency``), at
``--threads`` threads, and compared on the minimum, the figure other load disturbs least.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_export.verify.latency import DEFAULT_RUNS, DEFAULT_WARMUP, STATISTIC


def compare(packages: list[Path], model: str | None = None, threads: int = 1,
            runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP) -> dict[str, Any]:
    """Latency of every package (and of ``model`` in PyTorch eager), measured interleaved.
    Packages whose runtime cannot run here are listed with the reason, untimed."""
    from edge_export.build.exporter import RuntimeUnavailable, ToolchainMissing
    from edge_export.verify.integrity import opened, run_golden
    from edge_export.verify.latency import limit_threads, measure

    limit_threads(threads)
    runners: dict[str, Callable[[], Any]] = {}
    rows: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for package in packages:
            folder = stack.enter_context(opened(package))
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            label = f"{manifest['target']}/{manifest['recipe']['name']}"
            row = {"package": str(package), "target": manifest["target"],
                   "recipe": manifest["recipe"]["name"], "bytes": manifest["artifact"]["bytes"]}
            try:
                golden = run_golden(folder, manifest, threads=threads)
            except (RuntimeUnavailable, ToolchainMissing) as exc:
                rows[label] = {**row, "runtime": manifest["parity"]["runtime"],
                               "not_run": str(exc)}
                continue
            sample, run = golden.inputs[0], golden.run
            runners[label] = lambda run=run, sample=sample: run(sample)
            rows[label] = {**row, "runtime": golden.runtime}
        if model is not None:
            runners["pytorch-eager"] = _eager_runner(model)
            rows["pytorch-eager"] = {"target": "pytorch", "recipe": "fp32", "runtime": "eager"}
        measured = measure(runners, runs=runs, warmup=warmup, threads=threads)
    for label, stat in measured.pop("runners").items():
        rows[label].update(stat)
    eager = rows.get("pytorch-eager", {}).get(STATISTIC)
    for row in rows.values():
        if eager and row.get(STATISTIC) is not None:
            row["vs_eager"] = float(f"{row[STATISTIC] / eager:.4g}")
    timed = {k: r[STATISTIC] for k, r in rows.items() if r.get(STATISTIC) is not None
             and k != "pytorch-eager" and r["runtime"] != "mil-reference"}
    return {**measured, "fastest": min(timed, key=timed.get) if timed else None,
            "results": [{"label": k, **r} for k, r in rows.items()]}


def _eager_runner(spec: str) -> Callable[[], Any]:
    """The model in PyTorch eager on its example inputs (golden sample 0 of every package)."""
    import torch

    from edge_export.load.model import load_model

    loaded = load_model(spec)
    module, inputs = loaded.module.eval(), loaded.example_inputs

    def run() -> Any:
        with torch.no_grad():
            return module(*inputs)

    return run


@click.command("latency")
@click.argument("packages", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", metavar="SPEC", help="Also time this model in PyTorch eager "
              "(file.py:attr or package.module:attr; runs its code).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Threads for every runtime and for torch.")
@click.option("--runs", type=click.IntRange(1, 100_000), default=DEFAULT_RUNS, show_default=True,
              help="Timed runs of each, interleaved.")
@click.option("--warmup", type=click.IntRange(0, 1000), default=DEFAULT_WARMUP,
              show_default=True, help="Untimed runs of each first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def latency_cmd(packages: tuple[Path, ...], model: str | None, threads: int, runs: int,
                warmup: int, as_json: bool) -> None:
    """Host latency of PACKAGES (directories or zips) side by side, interleaved, with
    min / median / p90, the load average and the thread count. Compare the min: it is
    what other load on the machine disturbs least."""
    from edge_export.cli.main import _stdout_for_json
    from edge_export.verify.latency import busy_warning

    with _stdout_for_json(as_json) as emit:  # runtimes print banners on their first run
        result = compare(list(packages), model, threads, runs, warmup)
        if (warning := busy_warning(result)) is not None:
            click.echo(warning, err=True)
        emit(result)
    if as_json:
        return
    from rich.table import Table

    from edge_export.cli.progress import output_console

    table = Table(title=f"host latency, {threads} thread(s), {runs} interleaved runs after "
                        f"{warmup} warm-up; load {result['load_avg_1m']} on {result['cpu_count']} cores")
    for col in ("package", "runtime", "min ms", "median ms", "p90 ms", "min vs eager"):
        table.add_column(col)
    for row in result["results"]:
        if "not_run" in row:
            table.add_row(row["label"], row["runtime"], "not run", "", "", row["not_run"][:60])
            continue
        ratio = f"{row['vs_eager']:.2f}x" if "vs_eager" in row else "–"
        table.add_row(row["label"], row["runtime"], f"{row['min_ms']:.3f}",
                      f"{row['median_ms']:.3f}", f"{row['p90_ms']:.3f}", ratio)
    output_console().print(table)
    if result["fastest"]:
        click.echo(f"fastest: {result['fastest']} (by min; the MIL reference executor is not "
                   "a device runtime and is left out)")
